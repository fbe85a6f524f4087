/*
 * activation - what a service manager hands the agent: the listening
 * socket of systemd's socket activation (LISTEN_FDS, LISTEN_PID; the
 * protocol of sd_listen_fds(3), without libsystemd), and whether stderr
 * is the journal.
 */
#ifndef MTLS_ACTIVATION_H
#define MTLS_ACTIVATION_H

#include <stddef.h>

/* The first descriptor passed (SD_LISTEN_FDS_START). */
#define ACTIVATION_FD 3

/*
 * Takes the socket passed by socket activation.  The variables count only
 * when LISTEN_PID is our pid (they may have been meant for a parent);
 * they are removed from the environment either way, so that nothing the
 * agent starts takes them for its own.  The descriptor must be exactly
 * one (LISTEN_FDS=1), fd 3, a listening AF_UNIX SOCK_STREAM socket bound
 * to a path; it is made close-on-exec.
 * Returns 1 with *fd = 3 and *path (a new string: the socket's path), 0
 * when no socket was passed to us (*fd = -1, *path = NULL), or a negative
 * MTLS_ERR_* with a message in err.
 */
__attribute__((warn_unused_result)) int activation_socket(int *fd, char **path, char *err,
							  size_t err_len);

/*
 * The same, and also the SSH agent socket: with LISTEN_FDS=2 the
 * descriptor named "ssh" in LISTEN_FDNAMES (FileDescriptorName=ssh of
 * mtls-agent-ssh.socket) is the SSH socket (*ssh_fd, *ssh_path), the other
 * one the agent's.  With one socket *ssh_fd is -1.  (Numbered 3 and 4;
 * both checked as activation_socket() checks its one.)
 */
__attribute__((warn_unused_result)) int
activation_sockets(int *fd, char **path, int *ssh_fd, char **ssh_path, char *err, size_t err_len);

/* 1 when stderr is the journal's stream (JOURNAL_STREAM names its device
 * and inode): log through syslog(3) then, so messages keep their
 * priorities. */
int activation_stderr_is_journal(void);

#endif
