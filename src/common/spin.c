/*
 * spin.c - when busy-polling is worth it (see spin.h).
 */
#include "config.h"

#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "spin.h"

int
spin_cpu_count(const cpu_set_t *set, size_t setsize)
{
	int n = CPU_COUNT_S(setsize, set);

	return n < 1 ? 1 : n;
}

/* Fills *set (allocated, *size bytes) with pid's affinity; 0 or -1. */
static int
get_affinity(pid_t pid, cpu_set_t **set, size_t *size)
{
	int ncpu;

	*set = NULL;
	/* Large machines have more CPUs than a cpu_set_t holds. */
	for (ncpu = 1024; ncpu <= 65536; ncpu *= 2) {
		*size = CPU_ALLOC_SIZE(ncpu);
		if ((*set = CPU_ALLOC(ncpu)) == NULL)
			return -1;
		CPU_ZERO_S(*size, *set);
		if (sched_getaffinity(pid, *size, *set) == 0)
			return 0;
		CPU_FREE(*set);
		*set = NULL;
		if (errno != EINVAL)
			return -1;
	}
	return -1;
}

int
spin_cpus_allowed(pid_t pid)
{
	cpu_set_t *set;
	size_t size;
	long n;
	int r;

	if (get_affinity(pid, &set, &size) == 0) {
		r = spin_cpu_count(set, size);
		CPU_FREE(set);
		return r;
	}
	n = sysconf(_SC_NPROCESSORS_ONLN);
	return n < 1 ? 1 : n > 65536 ? 65536 : (int)n;
}

int
spin_max_spinners(int cpus_allowed, int peer_has_own_cpu)
{
	if (cpus_allowed < 1)
		return 0;
	return peer_has_own_cpu ? cpus_allowed : cpus_allowed / 2;
}

int
spin_pid_has_own_cpu(pid_t pid)
{
	cpu_set_t *mine = NULL, *peer = NULL;
	size_t size_mine, size_peer, i;
	int own = 0;

	if (pid <= 0)
		return 0;
	if (get_affinity(0, &mine, &size_mine) != 0 || get_affinity(pid, &peer, &size_peer) != 0)
		goto out;
	for (i = 0; i < size_peer * 8 && !own; i++)
		own = CPU_ISSET_S(i, size_peer, peer) && !CPU_ISSET_S(i, size_mine, mine);
out:
	if (mine != NULL)
		CPU_FREE(mine);
	if (peer != NULL)
		CPU_FREE(peer);
	return own;
}

int
spin_peer_has_own_cpu(int fd)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == -1 || cred.pid <= 0)
		return 0;
	/* A pid from another pid namespace is 0 (above) or someone else's
	 * here; at worst that someone decides, and the back-off still acts. */
	return spin_pid_has_own_cpu(cred.pid);
}

int
spin_place_cap(struct spin_place *p, pid_t peer, unsigned long long now_us)
{
	if (p->next_us == 0 || now_us >= p->next_us) {
		p->cap = spin_max_spinners(spin_cpus_allowed(0), spin_pid_has_own_cpu(peer));
		p->next_us = now_us + SPIN_PLACE_EVERY_US;
	}
	return p->cap;
}

enum spin_outcome
spin_judge(int got_data, unsigned long long spun_us, unsigned int budget_us, long preemptions)
{
	if (preemptions > 0 || spun_us > (unsigned long long)budget_us + SPIN_LATE_US)
		return SPIN_PREEMPTED;
	return got_data ? SPIN_WON : SPIN_ASLEEP;
}

int
spin_allowed(const struct spin_ctl *s, unsigned long long now_us)
{
	return now_us >= s->hold_until_us;
}

static void
hold(struct spin_ctl *s, unsigned long long now_us)
{
	if (s->hold_us < SPIN_HOLD_MIN_US)
		s->hold_us = SPIN_HOLD_MIN_US;
	else if (s->hold_us < SPIN_HOLD_MAX_US / 2)
		s->hold_us *= 2;
	else
		s->hold_us = SPIN_HOLD_MAX_US;
	s->hold_until_us = now_us + s->hold_us;
	s->wins = 0;
}

void
spin_record(struct spin_ctl *s, unsigned long long now_us, enum spin_outcome o)
{
	switch (o) {
	case SPIN_WON:
		s->asleep_avg -= s->asleep_avg / 8;
		/* Only a long clean run shortens the next hold: a competitor
		 * for the CPU lets a spin win now and then, between the
		 * time slices it takes. */
		if (++s->wins >= SPIN_RELAX_WINS) {
			s->hold_us /= 2;
			s->wins = 0;
		}
		break;
	case SPIN_ASLEEP:
		/* A spin that runs out costs its budget, not a time slice:
		 * back off only once most recent spins did. */
		s->asleep_avg += (1024 - s->asleep_avg) / 8;
		s->wins = 0;
		if (s->asleep_avg > 512) {
			hold(s, now_us);
			s->asleep_avg = 512;
		}
		break;
	case SPIN_PREEMPTED: hold(s, now_us); break;
	}
}

unsigned long long
spin_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000;
}

/* Times this thread was preempted so far; -1 if unknown. */
static long
preemptions(void)
{
	struct rusage ru;

	return getrusage(RUSAGE_THREAD, &ru) == 0 ? ru.ru_nivcsw : -1;
}

int
spin_wait(struct spin_ctl *s, int fd, struct frame_rx *rx, unsigned int budget_us)
{
	unsigned long long t0, t1;
	long p0, p1;
	int got;

	if (budget_us == 0)
		return 0;
	t0 = spin_now_us();
	if (!spin_allowed(s, t0))
		return 0;
	p0 = preemptions();
	got = frame_spin(fd, rx, budget_us);
	p1 = preemptions();
	t1 = spin_now_us();
	spin_record(s, t1, spin_judge(got, t1 - t0, budget_us, p0 >= 0 && p1 >= 0 ? p1 - p0 : 0));
	return got;
}
