/* Output without stdio: text and decimal integers straight to write() (the board's
 * _write: semihosting or the UART), so the image carries none of newlib's printf,
 * FILE buffers and malloc (about 5 KB of flash on a Cortex-M4).
 * Example: print("test "), print_int(-12), print("\n") writes "test -12\n". */
#include "print.h"

#include <string.h>
#include <unistd.h>

void print(const char *text) { (void)!write(1, text, strlen(text)); }

void print_int(int value) {
  char digits[12], *p = digits + sizeof digits;
  unsigned magnitude = value < 0 ? 0u - (unsigned)value : (unsigned)value;
  *--p = '\0';
  do {
    *--p = (char)('0' + magnitude % 10u);
  } while (magnitude /= 10u);
  if (value < 0) *--p = '-';
  print(p);
}
