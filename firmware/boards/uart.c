/* Output on real boards: write() (app/print.c) goes to the UART that the board's debug probe
 * exposes as a USB serial port (115200 baud, 8N1), at the reset clock (no PLL).
 * There is no host to return to: _exit prints "exit N" and sleeps forever. A BKPT
 * would fault without a debugger, so nothing here uses semihosting
 * (../shared/reference/firmware.md section 11.4). One board is chosen with
 * -DBOARD_STM32F746G_DISCO, -DBOARD_NUCLEO_H743ZI or -DBOARD_NRF52840_DK. */
#include <stdint.h>
#include "print.h"

#define REG(addr) (*(volatile uint32_t *)(addr))

#if defined(BOARD_STM32F746G_DISCO) || defined(BOARD_NUCLEO_H743ZI)
/* STM32 USART (F7/H7 register layout): CR1 +0x00 (UE bit 0, TE bit 3), BRR +0x0C,
 * ISR +0x1C (TXE bit 7), TDR +0x28. */
#if defined(BOARD_STM32F746G_DISCO)
/* ST-LINK virtual COM port: USART1 TX on PA9 (AF7); HSI 16 MHz after reset. */
#define UART 0x40011000u
#define CLOCK_HZ 16000000u
#define TX_PIN 9
static void clocks_and_pin(void) {
  REG(0x40023830u) |= 1u << 0;                          /* RCC_AHB1ENR: GPIOA */
  REG(0x40023844u) |= 1u << 4;                          /* RCC_APB2ENR: USART1 */
  const uint32_t gpio = 0x40020000u;                    /* GPIOA */
  REG(gpio + 0x00) = (REG(gpio + 0x00) & ~(3u << 2 * TX_PIN)) | (2u << 2 * TX_PIN);  /* AF */
  REG(gpio + 0x24) = (REG(gpio + 0x24) & ~(15u << 4 * (TX_PIN - 8))) | (7u << 4 * (TX_PIN - 8));
}
#else
/* ST-LINK virtual COM port: USART3 TX on PD8 (AF7); HSI 64 MHz after reset. */
#define UART 0x40004800u
#define CLOCK_HZ 64000000u
#define TX_PIN 8
static void clocks_and_pin(void) {
  REG(0x580244E0u) |= 1u << 3;                          /* RCC_AHB4ENR: GPIOD */
  REG(0x580244E8u) |= 1u << 18;                         /* RCC_APB1LENR: USART3 */
  const uint32_t gpio = 0x58020C00u;                    /* GPIOD */
  REG(gpio + 0x00) = (REG(gpio + 0x00) & ~(3u << 2 * TX_PIN)) | (2u << 2 * TX_PIN);  /* AF */
  REG(gpio + 0x24) = (REG(gpio + 0x24) & ~(15u << 4 * (TX_PIN - 8))) | (7u << 4 * (TX_PIN - 8));
}
#endif

static void uart_init(void) {
  clocks_and_pin();
  REG(UART + 0x0C) = (CLOCK_HZ + 115200u / 2) / 115200u;  /* BRR, oversampling by 16 */
  REG(UART + 0x00) = (1u << 3) | (1u << 0);               /* TE, UE */
}

static void uart_putc(char c) {
  while (!(REG(UART + 0x1C) & (1u << 7))) {
  }
  REG(UART + 0x28) = (uint8_t)c;
}

#elif defined(BOARD_NRF52840_DK)
/* nRF52840 UART0 (legacy, no DMA) TX on P0.06, the J-Link OB virtual COM port. */
#define UART 0x40002000u
static void uart_init(void) {
  REG(UART + 0x50C) = 6u;                               /* PSEL.TXD = P0.06 */
  REG(UART + 0x524) = 0x01D7E000u;                      /* BAUDRATE 115200 */
  REG(UART + 0x500) = 4u;                               /* ENABLE */
  REG(UART + 0x008) = 1u;                               /* TASKS_STARTTX */
}

static void uart_putc(char c) {
  REG(UART + 0x11C) = 0u;                               /* EVENTS_TXDRDY */
  REG(UART + 0x51C) = (uint8_t)c;                       /* TXD */
  while (!REG(UART + 0x11C)) {
  }
}

#else
#error "uart.c needs -DBOARD_STM32F746G_DISCO, -DBOARD_NUCLEO_H743ZI or -DBOARD_NRF52840_DK"
#endif

int _write(int fd, const char *buf, int len) {
  static int ready = 0;
  (void)fd;
  if (!ready) {
    uart_init();
    ready = 1;
  }
  for (int i = 0; i < len; ++i) {
    if (buf[i] == '\n') uart_putc('\r');
    uart_putc(buf[i]);
  }
  return len;
}

void _exit(int status) {
  print("exit "), print_int(status), print("\n");
  for (;;) __asm__ volatile("wfi");
}
