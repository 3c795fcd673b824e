/* Plant keys for the kdumptool scrub evidence guest (add_key(2), no keyutils): the payloads
 * are random hex made here, printed on stdout so the host learns them. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/random.h>
#include <sys/syscall.h>
#define KEY_SPEC_USER_KEYRING -4
static void secret(char *out, const char *prefix) {
  unsigned char r[16];
  getrandom(r, sizeof r, 0);
  int n = sprintf(out, "%s", prefix);
  for (int i = 0; i < 16; i++) n += sprintf(out + n, "%02x", r[i]);
}
int main(void) {
  char user[80], logon[80];
  secret(user, "SCRUB-USER-KEY-");
  secret(logon, "SCRUB-LOGON-KEY-");
  long a = syscall(SYS_add_key, "user", "scrub-user-key", user, strlen(user), KEY_SPEC_USER_KEYRING);
  long b = syscall(SYS_add_key, "logon", "scrub:logon-key", logon, strlen(logon), KEY_SPEC_USER_KEYRING);
  printf("user_key=%s\nlogon_key=%s\nuser_key_id=%ld\nlogon_key_id=%ld\n", user, logon, a, b);
  memset(user, 0, sizeof user); memset(logon, 0, sizeof logon);
  return a < 0 || b < 0;
}
