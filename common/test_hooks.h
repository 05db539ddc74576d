/*
 * Sandbox self-test hooks: TEST BUILDS ONLY (make TEST_HOOKS=1 defines REDOUBT_TEST_HOOKS).
 * A release build compiles none of this; tests check its binary has no trace of it.
 *
 * Armed by the sandboxes just before the seccomp filter is loaded: a realtime signal makes
 * the process attempt one forbidden (or fenced) operation, so the system tests can prove the
 * sandbox from the outside with os.kill(pid, SIGRTMIN + n):
 *   +1  openat(2) of the first identity's key file        (worker: killed)
 *   +2  execve("/bin/true")                               (killed)
 *   +3  socket(AF_PACKET, SOCK_RAW)                       (killed)
 *   +4  TCP connect to 127.0.0.1:1, a port not configured (worker: Landlock EACCES, reported)
 *   +5  socket(AF_INET, SOCK_DGRAM)                       (worker: killed)
 *   +6  socket(AF_INET, SOCK_STREAM)                      (keyd: killed; worker: allowed)
 *   +7  openat(2) of /etc/passwd, read-only               (keyd: Landlock EACCES, reported)
 * Surviving attempts write "test hook N: result R errno E" on stderr.
 */
#ifndef REDOUBT_TEST_HOOKS_H
#define REDOUBT_TEST_HOOKS_H

#if !defined(REDOUBT_TEST_HOOKS)
#error "common/test_hooks.h is for test builds only"
#endif

#include "policy/config.h"

#define TEST_HOOK_FIRST 1
#define TEST_HOOK_LAST  7

void test_hooks_arm(const struct config *cfg);

#endif
