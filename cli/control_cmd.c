/*
 * `redoubt rotate` and `redoubt status`: clients of keyd's control socket.
 */
#include <stdio.h>

#include "cli/cli.h"

int
cmd_rotate(int argc, char **argv)
{
	fprintf(stderr, "redoubt rotate: send SIGHUP to the redoubt supervisor until the control "
	    "socket lands\n");
	return 1;
}

int
cmd_status(int argc, char **argv)
{
	fprintf(stderr, "redoubt status: not available until the control socket lands\n");
	return 1;
}
