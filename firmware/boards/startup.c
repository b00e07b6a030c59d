/* Bare-metal startup for the QEMU MPS2/MPS3 boards: vector table, reset handler
 * and the newlib syscalls for semihosting output and exit status
 * (../shared/reference/firmware.md section 4.2). Under QEMU with
 * -semihosting-config enable=on, main()'s return value becomes QEMU's exit
 * status; any fault exits with 131. */
#include <stdint.h>
#include <sys/stat.h>

extern uint32_t __etext, __data_start__, __data_end__, __bss_start__, __bss_end__, __StackTop;
extern int main(void);
extern void __libc_init_array(void);
extern void exit(int status);

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

int _fstat(int fd, struct stat *st) {
  (void)fd;
  st->st_mode = S_IFCHR;
  return 0;
}

int _isatty(int fd) {
  (void)fd;
  return 1;
}

static void fault(void) { _exit(131); }

void Reset_Handler(void) {
#if defined(__ARM_FP) || defined(__ARM_FEATURE_MVE)
  *(volatile uint32_t *)0xE000ED88u |= 0xFu << 20;    /* CPACR: enable CP10/CP11 */
  __asm__ volatile("dsb\n isb");
#endif
  for (uint32_t *src = &__etext, *dst = &__data_start__; dst < &__data_end__;) *dst++ = *src++;
  for (uint32_t *dst = &__bss_start__; dst < &__bss_end__;) *dst++ = 0;
  __libc_init_array();
  exit(main());
}

__attribute__((section(".vectors"), used)) static void (*const vectors[16])(void) = {
    (void (*)(void))(&__StackTop), Reset_Handler, fault, fault, fault, fault, fault, 0, 0, 0, 0,
    fault, fault, 0, fault, fault};
