/*
 * confirm - asks a person, through an askpass-style program, whether a
 * signature may be made.  The program gets the prompt as its argument
 * (and SSH_ASKPASS_PROMPT=confirm, so ssh-askpass programs show yes/no);
 * exit status 0 means yes.
 */
#ifndef MTLS_CONFIRM_H
#define MTLS_CONFIRM_H

#include <stddef.h>

/* Returns 0 if confirmed; MTLS_ERR_CONFIRM_DENIED if refused, timed out
 * (the program is killed), or no program is configured. */
__attribute__((warn_unused_result)) int confirm_ask(const char *askpass, unsigned int timeout_s,
						    const char *prompt, char *why, size_t why_len);

/*
 * Asks a person for a PIN: the askpass program gets the prompt as its
 * argument (no SSH_ASKPASS_PROMPT, so ssh-askpass programs ask for a
 * secret) and prints the PIN on one line.  On success *pin is the PIN in
 * secure memory (mtls_secure_free).  MTLS_ERR_CONFIRM_DENIED if no program
 * is configured, it fails, or it gives nothing within timeout_s (it is
 * killed); MTLS_ERR_PIN_INVALID for an answer that is not one PIN.
 */
__attribute__((warn_unused_result)) int confirm_read_pin(const char *askpass,
							 unsigned int timeout_s, const char *prompt,
							 char **pin, char *why, size_t why_len);

#endif
