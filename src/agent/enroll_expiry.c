/*
 * enroll_expiry.c - certificates that expire: the agent's warning once a
 * day per certificate from `expiry-warning-days` before its notAfter (and
 * after it), and the count STATUS reports.  Called from the once-a-second
 * tick (token_expire) and from token_status.
 */
#include "config.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <openssl/asn1.h>
#include <openssl/x509.h>

#include "log.h"
#include "token_int.h"

#define DAY 86400

/* What was warned about: a certificate is its identity's name and end. */
static struct {
	char name[MTLS_NAME_MAX + 1];
	time_t not_after;
	time_t warned;
} seen[MTLS_IDS_MAX];
static pthread_mutex_t seen_mu = PTHREAD_MUTEX_INITIALIZER;

int
tk_cert_days_left(X509 *x, time_t now, int *days, time_t *not_after)
{
	ASN1_TIME *t = ASN1_TIME_set(NULL, now);
	struct tm tm;
	int d = 0, s = 0, ok;

	ok = t != NULL && ASN1_TIME_diff(&d, &s, t, X509_get0_notAfter(x)) == 1 &&
	     ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) == 1;
	ASN1_TIME_free(t);
	if (!ok)
		return -1;
	/* Whole days left, rounded down: the last day is 0, a past end is
	 * negative (d and s have the same sign). */
	*days = d < 0 || s < 0 ? d - 1 : d;
	*not_after = timegm(&tm);
	return 0;
}

static int
due(const char *name, time_t not_after, time_t now)
{
	size_t i, free_at = MTLS_IDS_MAX, oldest = 0;
	int r = 0;

	pthread_mutex_lock(&seen_mu);
	for (i = 0; i < MTLS_IDS_MAX; i++) {
		if (seen[i].name[0] == '\0') {
			if (free_at == MTLS_IDS_MAX)
				free_at = i;
			continue;
		}
		if (seen[i].warned < seen[oldest].warned)
			oldest = i;
		if (strcmp(seen[i].name, name) == 0 && seen[i].not_after == not_after) {
			if (now - seen[i].warned >= DAY) {
				seen[i].warned = now;
				r = 1;
			}
			goto out;
		}
	}
	i = free_at != MTLS_IDS_MAX ? free_at : oldest;
	snprintf(seen[i].name, sizeof(seen[i].name), "%s", name);
	seen[i].not_after = not_after;
	seen[i].warned = now;
	r = 1;
out:
	pthread_mutex_unlock(&seen_mu);
	return r;
}

void
tk_expiry_warn(struct tokenset *ts, time_t now)
{
	unsigned int n = ts->cfg->expiry_warning_days;
	time_t not_after;
	size_t i;
	int days;

	if (n == 0)
		return;
	pthread_rwlock_rdlock(&ts->lock);
	for (i = 0; i < ts->n; i++) {
		const struct ident *id = &ts->ids[i];

		if (id->cert == NULL || tk_cert_days_left(id->cert, now, &days, &not_after) != 0 ||
		    days >= (int)n || !due(id->name, not_after, now))
			continue;
		if (days < 0)
			warn("identity %s: its certificate has expired (renew: mtls-agentctl renew "
			     "%s)",
			     id->name, id->name);
		else
			warn("identity %s: its certificate expires in %d day%s (renew: "
			     "mtls-agentctl renew %s)",
			     id->name, days, days == 1 ? "" : "s", id->name);
	}
	pthread_rwlock_unlock(&ts->lock);
}

uint32_t
tk_expiring(struct tokenset *ts, time_t now)
{
	unsigned int n = ts->cfg->expiry_warning_days;
	time_t not_after;
	uint32_t count = 0;
	size_t i;
	int days;

	for (i = 0; n > 0 && i < ts->n; i++)
		if (ts->ids[i].cert != NULL &&
		    tk_cert_days_left(ts->ids[i].cert, now, &days, &not_after) == 0 &&
		    days < (int)n)
			count++;
	return count;
}
