/* A process whose command line holds a password (argv lives in its user stack pages). */
#include <unistd.h>
int main(int argc, char **argv) { (void)argc; (void)argv; for (;;) pause(); }
