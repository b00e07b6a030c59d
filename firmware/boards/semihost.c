/* Output and exit through Arm semihosting (QEMU with -semihosting-config
 * enable=on): write() goes to the host's stdout, _exit(status) becomes QEMU's exit
 * status (../shared/reference/firmware.md section 4.1). */
#include <stdint.h>

static int semihost(int op, void *arg) {
  register int r0 __asm__("r0") = op;
  register void *r1 __asm__("r1") = arg;
  __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
  return r0;
}

void _exit(int status) {
  uint32_t block[2] = {0x20026u, (uint32_t)status};  /* ADP_Stopped_ApplicationExit */
  semihost(0x20, block);                             /* SYS_EXIT_EXTENDED */
  semihost(0x18, (void *)0x20026u);                  /* SYS_EXIT (fallback) */
  for (;;) {
  }
}

int _write(int fd, const char *buf, int len) {
  static int handle = -1;
  (void)fd;
  if (handle < 0) {
    uint32_t open_block[3] = {(uint32_t)":tt", 4u, 3u};  /* SYS_OPEN ":tt", mode "w" */
    handle = semihost(0x01, open_block);
  }
  uint32_t block[3] = {(uint32_t)handle, (uint32_t)buf, (uint32_t)len};
  return len - semihost(0x05, block);                 /* SYS_WRITE: returns bytes not written */
}
