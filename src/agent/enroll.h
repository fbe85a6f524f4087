/*
 * enroll - key generation on a token and certificate import (enrollment),
 * in the token layer's tables (token_int.h).  Who may ask is decided by
 * server.c as for LOGIN and SET_PIN; what may be written is decided here:
 * `read-only` in the configuration, a logged-in token, a label not taken,
 * a certificate whose key is on the token.
 */
#ifndef MTLS_ENROLL_H
#define MTLS_ENROLL_H

#include <stddef.h>

#include "proto.h"
#include "token.h"

/* Generates a key pair (req->kind) labelled req->label on the token
 * req->token names ("" = the only one); fills resp. */
__attribute__((warn_unused_result)) int token_keygen(struct tokenset *ts,
						     const struct msg_keygen_req *req,
						     struct msg_keygen_resp *resp, char *why,
						     size_t why_len);

/* Writes the certificate next to its key; *name (malloc'd) is the identity. */
__attribute__((warn_unused_result)) int token_import_cert(struct tokenset *ts,
							  const struct msg_import_req *req,
							  char **name, char *why, size_t why_len);

/* Destroys the key pair and certificates of identity req->identity. */
__attribute__((warn_unused_result)) int token_delete_key(struct tokenset *ts,
							 const struct msg_delete_key_req *req,
							 char *why, size_t why_len);

#endif
