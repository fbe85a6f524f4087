/*
 * spin - when busy-polling for a reply is worth the CPU it burns.
 *
 * Busy-polling (frame_spin) saves waking a sleeping CPU, 100-150 us on a
 * virtual machine, but only while nobody else wants the CPU it spins on:
 * with a CPU-bound process on that CPU, every spin the scheduler ends
 * hands that process a whole time slice, and the reply waits for it.  So
 * the caller counts the CPUs it may really use (affinity, cpusets), and
 * each waiter keeps a struct spin_ctl that stops spinning for a while
 * after spins that did not pay off: the reply did not come in time (it
 * slept anyway), or the spin was preempted or took far longer than its
 * budget.  The decisions are pure functions of the state and the clock,
 * so they are unit-tested (tests/unit/test_spin.c).
 */
#ifndef MTLS_SPIN_H
#define MTLS_SPIN_H

#include <sched.h>
#include <stddef.h>
#include <sys/types.h>

#include "proto.h"

/* Back-off after a spin that did not pay off: first hold, longest hold. */
#define SPIN_HOLD_MIN_US 10000U
#define SPIN_HOLD_MAX_US 1000000U
/* Clean spins in a row after which the hold is halved again. */
#define SPIN_RELAX_WINS 1024U
/* A spin this much over its budget was not running all along. */
#define SPIN_LATE_US 100U

enum spin_outcome {
	SPIN_WON,	/* the reply came within the budget, on the CPU */
	SPIN_ASLEEP,	/* the budget ran out: the caller sleeps anyway */
	SPIN_PREEMPTED, /* preempted, or far over the budget */
};

struct spin_ctl {
	unsigned long long hold_until_us; /* no spinning before this (CLOCK_MONOTONIC) */
	unsigned int hold_us;		  /* the next hold; 0: none yet */
	unsigned int asleep_avg;	  /* recent SPIN_ASLEEP share, 0..1024 */
	unsigned int wins;		  /* SPIN_WON in a row */
};

/* CPUs in `set` (of `setsize` bytes); at least 1. */
int spin_cpu_count(const cpu_set_t *set, size_t setsize);
/* CPUs process `pid` (0: this one) may run on; sysconf() if unknown. */
int spin_cpus_allowed(pid_t pid);
/*
 * How many threads may busy-poll at once: half the CPUs we may use, so
 * the rest stay for the peer; all of them when the peer can run on a CPU
 * we cannot (its own), where our spinning never delays it.
 */
int spin_max_spinners(int cpus_allowed, int peer_has_own_cpu);
/* Whether process `pid` may run on a CPU this thread may not; 0 when
 * unknown (pid <= 0, or its mask cannot be read). */
int spin_pid_has_own_cpu(pid_t pid);
/* The same for the peer connected on fd (its pid from SO_PEERCRED). */
int spin_peer_has_own_cpu(int fd);

/*
 * spin_max_spinners() for this thread and a peer process, kept current:
 * taskset or a cpuset may move either side at any time, and a figure from
 * start-up (an agent started on two CPUs, then put on one with its helper)
 * says "spin" where a spin only keeps the peer off the CPU it needs.  Re-read
 * at most every SPIN_PLACE_EVERY_US (two sched_getaffinity calls).
 */
#define SPIN_PLACE_EVERY_US 1000000ULL
struct spin_place {
	unsigned long long next_us; /* re-read at or after this; 0: never read */
	int cap;
};
/* The cap for `peer` (0: unknown) at `now_us`; the caller serialises. */
int spin_place_cap(struct spin_place *p, pid_t peer, unsigned long long now_us);

/* What a spin of `spun_us` microseconds against `budget_us` came to. */
enum spin_outcome spin_judge(int got_data, unsigned long long spun_us, unsigned int budget_us,
			     long preemptions);
/* CLOCK_MONOTONIC in microseconds: the clock of every spin decision. */
unsigned long long spin_now_us(void);
/* Whether spinning is allowed at `now_us`. */
int spin_allowed(const struct spin_ctl *s, unsigned long long now_us);
/* Counts a spin that ended at `now_us`; starts or lengthens a hold. */
void spin_record(struct spin_ctl *s, unsigned long long now_us, enum spin_outcome o);

/*
 * frame_spin() on fd for up to budget_us when `s` allows it, judged and
 * recorded.  Returns what frame_spin() returned, 0 if it did not spin.
 */
int spin_wait(struct spin_ctl *s, int fd, struct frame_rx *rx, unsigned int budget_us);

#endif
