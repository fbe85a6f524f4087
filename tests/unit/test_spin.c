/*
 * test_spin.c - unit tests of the busy-polling decisions (src/common/spin.c).
 *
 * No timing is asserted: the CPU counts come from real affinity masks
 * (this process's, and a child's connected over a real UNIX socket), and
 * the back-off is driven with made-up clocks and outcomes.
 */
#include "config.h"

#include <errno.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "spin.h"

static void
test_cpu_count(void **state)
{
	size_t size = CPU_ALLOC_SIZE(2048);
	cpu_set_t *set = CPU_ALLOC(2048);

	assert_non_null(set);
	CPU_ZERO_S(size, set);
	/* An empty mask still leaves the CPU we run on. */
	assert_int_equal(spin_cpu_count(set, size), 1);
	CPU_SET_S(0, size, set);
	assert_int_equal(spin_cpu_count(set, size), 1);
	CPU_SET_S(5, size, set);
	CPU_SET_S(1500, size, set);
	assert_int_equal(spin_cpu_count(set, size), 3);
	CPU_FREE(set);
}

/* The first CPU in this process's mask, and how many it has. */
static int
first_cpu(cpu_set_t *orig, int *count)
{
	int i;

	assert_int_equal(sched_getaffinity(0, sizeof(*orig), orig), 0);
	*count = CPU_COUNT(orig);
	for (i = 0; i < CPU_SETSIZE; i++)
		if (CPU_ISSET(i, orig))
			return i;
	fail_msg("empty affinity mask");
	return -1;
}

static void
pin_to(int cpu)
{
	cpu_set_t one;

	CPU_ZERO(&one);
	CPU_SET(cpu, &one);
	assert_int_equal(sched_setaffinity(0, sizeof(one), &one), 0);
}

/* taskset and cpusets count, not the machine's CPUs (sysconf). */
static void
test_cpus_allowed(void **state)
{
	cpu_set_t orig;
	int count, cpu = first_cpu(&orig, &count);

	assert_int_equal(spin_cpus_allowed(0), count);
	if (count < 2 || sysconf(_SC_NPROCESSORS_ONLN) < 2)
		skip(); /* one CPU: nothing to tell apart */
	pin_to(cpu);
	assert_int_equal(spin_cpus_allowed(0), 1);
	assert_int_equal(sched_setaffinity(0, sizeof(orig), &orig), 0);
	assert_int_equal(spin_cpus_allowed(0), count);
}

static void
test_max_spinners(void **state)
{
	assert_int_equal(spin_max_spinners(0, 0), 0);
	assert_int_equal(spin_max_spinners(1, 0), 0);
	assert_int_equal(spin_max_spinners(2, 0), 1);
	assert_int_equal(spin_max_spinners(3, 0), 1);
	assert_int_equal(spin_max_spinners(8, 0), 4);
	/* A peer on a CPU of its own never waits for our spinning. */
	assert_int_equal(spin_max_spinners(1, 1), 1);
	assert_int_equal(spin_max_spinners(8, 1), 8);
}

/*
 * A child pinned to one CPU connects; this process, pinned to another,
 * sees that its peer has a CPU of its own, and stops seeing it once it
 * may run everywhere again.
 */
static void
test_peer_own_cpu(void **state)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	char dir[] = "/tmp/test_spin.XXXXXX";
	cpu_set_t orig;
	int count, cpu = first_cpu(&orig, &count), other, lfd, fd, st, i;
	pid_t pid;
	char c;

	if (count < 2)
		skip();
	for (other = -1, i = cpu + 1; i < CPU_SETSIZE && other == -1; i++)
		if (CPU_ISSET(i, &orig))
			other = i;
	assert_non_null(mkdtemp(dir));
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s/s", dir);
	assert_true((lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) != -1);
	assert_int_equal(bind(lfd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	assert_int_equal(listen(lfd, 1), 0);
	fflush(NULL);
	assert_true((pid = fork()) != -1);
	if (pid == 0) {
		cpu_set_t one;
		int cfd = socket(AF_UNIX, SOCK_STREAM, 0);

		CPU_ZERO(&one);
		CPU_SET(other, &one);
		if (sched_setaffinity(0, sizeof(one), &one) != 0 || cfd == -1 ||
		    connect(cfd, (struct sockaddr *)&sun, sizeof(sun)) != 0 ||
		    write(cfd, "x", 1) != 1)
			_exit(1);
		/* Until the parent is done: EOF. */
		(void)read(cfd, &c, 1);
		_exit(0);
	}
	assert_true((fd = accept(lfd, NULL, NULL)) != -1);
	assert_int_equal(read(fd, &c, 1), 1);
	/* The child is pinned by now (it wrote after pinning). */
	assert_int_equal(spin_peer_has_own_cpu(fd), 0);
	pin_to(cpu);
	assert_int_equal(spin_peer_has_own_cpu(fd), 1);
	assert_int_equal(sched_setaffinity(0, sizeof(orig), &orig), 0);
	assert_int_equal(spin_peer_has_own_cpu(fd), 0);
	close(fd);
	close(lfd);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	unlink(sun.sun_path);
	rmdir(dir);

	/* A socketpair's peer is this very process: no CPU of its own. */
	{
		int sv[2];

		assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
		assert_int_equal(spin_peer_has_own_cpu(sv[0]), 0);
		close(sv[0]);
		close(sv[1]);
	}
	assert_int_equal(spin_peer_has_own_cpu(-1), 0);
}

static void
pin_pid_to(pid_t pid, int cpu)
{
	cpu_set_t one;

	CPU_ZERO(&one);
	CPU_SET(cpu, &one);
	assert_int_equal(sched_setaffinity(pid, sizeof(one), &one), 0);
}

/*
 * The cap follows where this thread and the peer may run now, re-read once
 * SPIN_PLACE_EVERY_US has passed: both on one CPU, nobody spins (a spin
 * would keep the peer off the only CPU it has); the peer on a CPU of its
 * own, every CPU of ours may.  A figure taken at start-up was what made an
 * agent started on two CPUs, then put on one with its helper, spin anyway.
 */
static void
test_place_cap(void **state)
{
	struct spin_place p = { 0 }, unknown = { 0 };
	cpu_set_t orig;
	int count, cpu = first_cpu(&orig, &count), other = -1, i, st, pfd[2];
	pid_t pid;
	char c;

	if (count < 2)
		skip();
	for (i = cpu + 1; i < CPU_SETSIZE && other == -1; i++)
		if (CPU_ISSET(i, &orig))
			other = i;
	assert_int_equal(pipe(pfd), 0);
	fflush(NULL);
	assert_true((pid = fork()) != -1);
	if (pid == 0) {
		close(pfd[1]);
		/* Until the parent is done: EOF. */
		(void)read(pfd[0], &c, 1);
		_exit(0);
	}
	close(pfd[0]);
	/* Both may run everywhere: half of our CPUs. */
	assert_int_equal(spin_place_cap(&p, pid, 1), count / 2);
	assert_int_equal(spin_pid_has_own_cpu(pid), 0);
	/* Both put on one CPU: kept until re-read, then 0. */
	pin_to(cpu);
	pin_pid_to(pid, cpu);
	assert_int_equal(spin_place_cap(&p, pid, 2), count / 2);
	assert_int_equal(spin_place_cap(&p, pid, 1 + SPIN_PLACE_EVERY_US), 0);
	/* The peer moved to a CPU of its own: ours may spin. */
	pin_pid_to(pid, other);
	assert_int_equal(spin_pid_has_own_cpu(pid), 1);
	assert_int_equal(spin_place_cap(&p, pid, 1 + 2 * SPIN_PLACE_EVERY_US), 1);
	/* No peer known: as if it shared our one CPU. */
	assert_int_equal(spin_place_cap(&unknown, 0, 1), 0);
	assert_int_equal(spin_pid_has_own_cpu(-1), 0);
	assert_int_equal(sched_setaffinity(0, sizeof(orig), &orig), 0);
	close(pfd[1]);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static void
test_judge(void **state)
{
	assert_int_equal(spin_judge(1, 50, 100, 0), SPIN_WON);
	assert_int_equal(spin_judge(1, 100 + SPIN_LATE_US, 100, 0), SPIN_WON);
	assert_int_equal(spin_judge(0, 100, 100, 0), SPIN_ASLEEP);
	/* Preempted while spinning, or far over the budget: the CPU was
	 * someone else's meanwhile. */
	assert_int_equal(spin_judge(1, 10, 100, 1), SPIN_PREEMPTED);
	assert_int_equal(spin_judge(0, 100, 100, 2), SPIN_PREEMPTED);
	assert_int_equal(spin_judge(1, 101 + SPIN_LATE_US, 100, 0), SPIN_PREEMPTED);
	/* Unknown preemption count (-1) is none. */
	assert_int_equal(spin_judge(1, 50, 100, -1), SPIN_WON);
}

/* A preempted spin holds spinning off, the hold doubling up to its limit. */
static void
test_backoff_preempted(void **state)
{
	struct spin_ctl s = { 0 };
	unsigned long long t = 1000000;
	unsigned int want = SPIN_HOLD_MIN_US;
	int i;

	assert_true(spin_allowed(&s, t));
	for (i = 0; i < 20; i++) {
		spin_record(&s, t, SPIN_PREEMPTED);
		assert_int_equal(s.hold_us, want);
		assert_false(spin_allowed(&s, t));
		assert_false(spin_allowed(&s, t + want - 1));
		assert_true(spin_allowed(&s, t + want));
		t += want;
		want = want * 2 > SPIN_HOLD_MAX_US ? SPIN_HOLD_MAX_US : want * 2;
	}
	assert_int_equal(s.hold_us, SPIN_HOLD_MAX_US);
	/* Wins now and then between preemptions do not shorten it ... */
	for (i = 0; i < 100; i++)
		spin_record(&s, t, SPIN_WON);
	spin_record(&s, t, SPIN_PREEMPTED);
	assert_int_equal(s.hold_us, SPIN_HOLD_MAX_US);
	/* ... a long clean run does, by halves. */
	t += SPIN_HOLD_MAX_US;
	for (i = 0; i < (int)SPIN_RELAX_WINS; i++)
		spin_record(&s, t, SPIN_WON);
	assert_int_equal(s.hold_us, SPIN_HOLD_MAX_US / 2);
	assert_true(spin_allowed(&s, t));
	spin_record(&s, t, SPIN_PREEMPTED);
	assert_int_equal(s.hold_us, SPIN_HOLD_MAX_US);
}

/* Running out of budget now and then is cheap; mostly, it is not. */
static void
test_backoff_asleep(void **state)
{
	struct spin_ctl s = { 0 };
	unsigned long long t = 5000000;
	int i;

	/* One spin in three ends asleep: spinning goes on. */
	for (i = 0; i < 3000; i++) {
		spin_record(&s, t, i % 3 == 0 ? SPIN_ASLEEP : SPIN_WON);
		assert_true(spin_allowed(&s, t));
		t += 100;
	}
	/* Five in a row still spin, the sixth stops it. */
	s = (struct spin_ctl){ 0 };
	for (i = 0; i < 5; i++) {
		spin_record(&s, t, SPIN_ASLEEP);
		assert_true(spin_allowed(&s, t));
	}
	spin_record(&s, t, SPIN_ASLEEP);
	assert_false(spin_allowed(&s, t));
	assert_int_equal(s.hold_us, SPIN_HOLD_MIN_US);
	/* Another one right after the hold doubles it. */
	t += SPIN_HOLD_MIN_US;
	assert_true(spin_allowed(&s, t));
	spin_record(&s, t, SPIN_ASLEEP);
	assert_false(spin_allowed(&s, t));
	assert_int_equal(s.hold_us, 2 * SPIN_HOLD_MIN_US);
}

/* spin_wait() over a real socket: data waiting is a win, none is asleep,
 * and a hold keeps it from spinning at all. */
static void
test_spin_wait(void **state)
{
	struct frame_rx rx = { 0 };
	struct spin_ctl s = { 0 };
	int sv[2];

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	assert_int_equal(spin_wait(&s, sv[0], &rx, 0), 0);
	assert_int_equal(write(sv[1], "abc", 3), 3);
	assert_int_equal(spin_wait(&s, sv[0], &rx, 1000), 1);
	assert_int_equal(rx.end - rx.start, 3);
	frame_rx_reset(&rx);
	/* With nothing to read, it spins its budget and says 0. */
	assert_int_equal(spin_wait(&s, sv[0], &rx, 200), 0);
	/* Held off: returns at once even with data waiting. */
	s.hold_until_us = ~0ULL;
	assert_int_equal(write(sv[1], "d", 1), 1);
	assert_int_equal(spin_wait(&s, sv[0], &rx, 1000), 0);
	assert_int_equal(rx.end, 0);
	close(sv[0]);
	close(sv[1]);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cpu_count),	  cmocka_unit_test(test_cpus_allowed),
		cmocka_unit_test(test_max_spinners),	  cmocka_unit_test(test_peer_own_cpu),
		cmocka_unit_test(test_place_cap),	  cmocka_unit_test(test_judge),
		cmocka_unit_test(test_backoff_preempted), cmocka_unit_test(test_backoff_asleep),
		cmocka_unit_test(test_spin_wait),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests_name("spin", tests, NULL, NULL);
}
