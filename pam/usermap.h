/*
 * usermap - does this certificate belong to this user?  Shared by the PAM
 * module and the tools.
 */
#ifndef MTLS_USERMAP_H
#define MTLS_USERMAP_H

#include <stddef.h>

#include <openssl/x509.h>

enum usermap_method {
	USERMAP_CN = 1,	    /* subject CN == user */
	USERMAP_UID,	    /* subject UID attribute (0.9.2342.19200300.100.1.1) */
	USERMAP_EMAIL,	    /* rfc822Name SAN (or emailAddress) local part or
			       whole address == user */
	USERMAP_UPN,	    /* Microsoft UPN otherName SAN (user@REALM):
			       local part == user */
	USERMAP_MAPFILE,    /* root-owned map file: "<subject or sha256
			       fingerprint> <user>" lines */
	USERMAP_AUTHORIZED, /* per-user authorized-certificates file */
};

struct usermap_opts {
	enum usermap_method method;
	const char *map_file;	     /* USERMAP_MAPFILE: must be owned by root,
					not group/other-writable */
	const char *authorized_file; /* USERMAP_AUTHORIZED: path pattern, %h =
					the user's home, %u = the user name;
					default "%h/.config/mtls-agent/authorized_certs";
					the file holds PEM certificates or
					"sha256:<hex of SubjectPublicKeyInfo DER>"
					lines (by public key); it and its
					directory must be owned by the user or
					root and writable by no one else */
};

/*
 * Returns 0 if `cert` maps to `user`; MTLS_ERR_USER_MISMATCH if it maps to
 * someone else or to no one (also: unknown user, and a missing authorized
 * file or directory, why "no authorized certificates file (...)");
 * MTLS_ERR_CONFIG if the map file is missing, or a map or authorized file
 * is unreadable, malformed, a symlink, not a regular file, larger than
 * 1 MiB or has unsafe ownership/permissions (refused, not ignored);
 * MTLS_ERR_INVALID_ARGUMENT; MTLS_ERR_ALLOC.  `why` gets one line (also on
 * success: which rule matched).
 *
 * Details, per method:
 * - CN, UID: exactly one such attribute in the subject, equal to `user`
 *   byte for byte (two CNs: refused).
 * - EMAIL: any rfc822Name SAN whose local part, or whole address, equals
 *   `user`; the domain is not checked.  The subject emailAddress (exactly
 *   one) is used only when the certificate has no SAN extension at all.
 * - UPN: exactly one UPN otherName, a UTF8String; its part before the last
 *   '@' (or all of it) equals `user`.
 * - MAPFILE: absolute path; root-owned regular file, not group/other-
 *   writable, not a symlink.  Lines "<subject> <user>" where the subject is
 *   as `openssl x509 -noout -subject -nameopt RFC2253` prints it (without
 *   "subject="), or "sha256:<hex SHA-256 of the certificate DER> <user>"
 *   (case-insensitive, ':' optional); the user is the last blank-separated
 *   word; '#' comments.  A certificate may be listed for several users.
 *   Any malformed line fails the whole file (MTLS_ERR_CONFIG).
 * - AUTHORIZED: the directory must be owned by the user or root and not
 *   group/other-writable; the file likewise, a regular file, opened
 *   without following a symlink (all checks on the opened descriptors).
 *   PEM certificates match by identical DER; "sha256:<hex SHA-256 of the
 *   SubjectPublicKeyInfo DER>" lines match by public key (openssl x509
 *   -noout -pubkey | openssl pkey -pubin -outform DER | sha256sum).
 */
__attribute__((warn_unused_result)) int usermap_check(X509 *cert, const char *user,
						      const struct usermap_opts *o, char *why,
						      size_t why_len);

/* Parses "cn", "uid", "email", "upn", "mapfile", "authorized"; 0 if unknown. */
int usermap_method_from_name(const char *name);

#endif
