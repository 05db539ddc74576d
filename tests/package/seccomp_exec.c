/*
 * seccomp_exec: run a command under the system call filter a systemd unit would give it, on a
 * machine where systemd is not PID 1 (the package test).  What it reproduces:
 *
 *   SystemCallFilter= (allow list), SystemCallErrorNumber=  the allowed names, one per line,
 *       in ALLOWFILE (already expanded from the unit's @groups); any other call fails with
 *       ERRNO
 *   SystemCallArchitectures=native   libseccomp's default: only the native ABI
 *   RestrictAddressFamilies=         socket(2) only for the families in AFLIST (numbers,
 *       comma-separated); others fail with EAFNOSUPPORT, as under systemd
 *   MemoryDenyWriteExecute=          mmap/mprotect/pkey_mprotect with PROT_WRITE|PROT_EXEC
 *       fail with EPERM
 *
 * Not reproduced: RestrictNamespaces=, RestrictRealtime=, RestrictSUIDSGID=, LockPersonality=.
 *
 * usage: seccomp_exec ALLOWFILE ERRNO AFLIST MDWE(0|1) COMMAND [ARG]...
 * Needs NO_NEW_PRIVS (setpriv --no-new-privs) or CAP_SYS_ADMIN; test code, never installed.
 */
#include <errno.h>
#include <seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#define SECCOMP_EXEC_NAME_MAX 128   /* bytes of a system call name, with the newline */
#define SECCOMP_EXEC_AF_MAX   16    /* address families in AFLIST */

static int
is_one_of(const char *name, const char *const *list)
{
	for (; *list != NULL; list++)
		if (strcmp(name, *list) == 0)
			return 1;
	return 0;
}

int
main(int argc, char **argv)
{
	static const char *const w_or_x[] = { "mmap", "mprotect", "pkey_mprotect", NULL };
	static const char *const sock[] = { "socket", NULL };
	char line[SECCOMP_EXEC_NAME_MAX], *end, *tok;
	int afs[SECCOMP_EXEC_AF_MAX], n_af = 0, mdwe, err, nr, r;
	scmp_filter_ctx ctx;
	FILE *f;

	if (argc < 6) {
		fprintf(stderr, "usage: seccomp_exec ALLOWFILE ERRNO AFLIST MDWE COMMAND [ARG]...\n");
		return 64;
	}
	err = (int)strtol(argv[2], &end, 10);
	mdwe = strcmp(argv[4], "1") == 0;
	for (tok = strtok(argv[3], ","); tok != NULL && n_af < SECCOMP_EXEC_AF_MAX;
	    tok = strtok(NULL, ","))
		afs[n_af++] = atoi(tok);
	if ((ctx = seccomp_init(SCMP_ACT_ERRNO((unsigned)err))) == NULL) {
		fprintf(stderr, "seccomp_exec: seccomp_init failed\n");
		return 1;
	}
	if ((f = fopen(argv[1], "r")) == NULL) {
		perror(argv[1]);
		return 1;
	}
	while (fgets(line, sizeof(line), f) != NULL) {
		line[strcspn(line, "\n")] = '\0';
		if (line[0] == '\0')
			continue;
		nr = seccomp_syscall_resolve_name(line);
		if (nr == __NR_SCMP_ERROR)
			continue;   /* not a call on this architecture */
		if (mdwe && is_one_of(line, w_or_x)) {
			/* Allowed unless both PROT_WRITE and PROT_EXEC (arg 2). */
			const scmp_datum_t m = PROT_WRITE | PROT_EXEC;
			r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 1, SCMP_A2(SCMP_CMP_MASKED_EQ, m, 0));
			r = r ? r : seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 1,
			    SCMP_A2(SCMP_CMP_MASKED_EQ, m, PROT_WRITE));
			r = r ? r : seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 1,
			    SCMP_A2(SCMP_CMP_MASKED_EQ, m, PROT_EXEC));
			/* libseccomp refuses a rule that repeats the default action. */
			if (err != EPERM)
				r = r ? r : seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), nr, 1,
				    SCMP_A2(SCMP_CMP_MASKED_EQ, m, m));
		} else if (n_af > 0 && is_one_of(line, sock)) {
			r = 0;
			for (int i = 0; i < n_af && r == 0; i++)
				r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 1,
				    SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)afs[i]));
			for (int af = 0; af < AF_MAX && r == 0; af++) {
				int allowed = 0;
				for (int i = 0; i < n_af; i++)
					allowed |= afs[i] == af;
				if (!allowed && err != EAFNOSUPPORT)
					r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EAFNOSUPPORT), nr, 1,
					    SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)af));
			}
		} else
			r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0);
		if (r != 0) {
			fprintf(stderr, "seccomp_exec: rule for %s: %s\n", line, strerror(-r));
			return 1;
		}
	}
	fclose(f);
	if ((r = seccomp_load(ctx)) != 0) {
		fprintf(stderr, "seccomp_exec: seccomp_load: %s\n", strerror(-r));
		return 1;
	}
	seccomp_release(ctx);
	execvp(argv[5], argv + 5);
	fprintf(stderr, "seccomp_exec: %s: %s\n", argv[5], strerror(errno));
	return 127;
}
