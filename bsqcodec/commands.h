/* bsqcodec subcommands. Each takes argc/argv starting at its own name and
 * returns the process exit status (see EXIT STATUS in bsqcodec(1)). */
#ifndef BSQCODEC_COMMANDS_H
#define BSQCODEC_COMMANDS_H

enum {
    EXIT_OK = 0,
    EXIT_RUNTIME = 1, /* unreadable, corrupt or unsupported input; I/O failure */
    EXIT_USAGE = 2    /* bad command line */
};

int cmd_import(int argc, char **argv);
int cmd_encode(int argc, char **argv);
int cmd_decode(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_train_prior(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_detokenize(int argc, char **argv);
int cmd_compare(int argc, char **argv);

/* Prints "bsqcodec: <message>" to stderr. */
void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
