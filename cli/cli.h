/* The `redoubt` subcommands; each returns the process exit status. */
#ifndef REDOUBT_CLI_H
#define REDOUBT_CLI_H

#define REDOUBT_VERSION "0.1.0"

/* Exit codes shared by the subcommands. */
#define EXIT_USAGE   64   /* bad command line (sysexits EX_USAGE) */
#define EXIT_CONFIG  78   /* bad configuration (sysexits EX_CONFIG) */

int cmd_serve(int argc, char **argv);
int cmd_check_config(int argc, char **argv);
int cmd_cert(int argc, char **argv);        /* `redoubt cert dev ...` */
int cmd_rotate(int argc, char **argv);
int cmd_status(int argc, char **argv);
int cmd_audit(int argc, char **argv);
int cmd_cluster_redirect(int argc, char **argv);
int cmd_tpm(int argc, char **argv);         /* `redoubt tpm create-key|public` */
int cmd_version(int argc, char **argv);

/* Entry points of the re-executed children (not for people to run). */
int keyd_main(int argc, char **argv);
int worker_main(int argc, char **argv);

#endif
