/* Bare-metal startup shared by all boards: vector table, reset handler and the
 * newlib syscalls that do not depend on the output channel
 * (../shared/reference/firmware.md section 4.2). The board's I/O file provides
 * _write and _exit: semihost.c under QEMU (main()'s return value becomes QEMU's
 * exit status, a fault exits with 131), uart_*.c on real boards. */
#include <stdint.h>
#include <sys/stat.h>

extern uint32_t __etext, __data_start__, __data_end__, __bss_start__, __bss_end__, __StackTop;
extern int main(void);
extern void __libc_init_array(void);
extern void exit(int status);
extern void _exit(int status);

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
