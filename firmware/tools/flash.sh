#!/bin/sh
# Flash a real board: tools/flash.sh FLASHER BOARD ELF (called by `make flash`).
# FLASHER is openocd, pyocd or st-flash; commands from ../shared/reference/firmware.md
# section 11. Fails with a clear message when the tool is missing, cannot flash this
# board, or finds no debug probe (exit 2).
set -u
flasher=$1 board=$2 elf=$3
hex=${elf%.elf}.hex bin=${elf%.elf}.bin

fail() { echo "make flash: $*" >&2; exit 2; }

case $flasher in
  openocd) install="apt-get install --no-install-recommends openocd" ;;
  pyocd) install="pip install pyocd" ;;
  st-flash) install="apt-get install --no-install-recommends stlink-tools" ;;
  *) fail "unknown FLASHER=$flasher: use openocd, pyocd or st-flash" ;;
esac
case $board:$flasher in
  stm32f746g-disco:openocd) set -- openocd -f board/stm32f746g-disco.cfg -c "program $elf verify reset exit" ;;
  nucleo-h743zi:openocd) set -- openocd -f board/st_nucleo_h743zi.cfg -c "program $elf verify reset exit" ;;
  nrf52840-dk:openocd) set -- openocd -f board/nordic_nrf52_dk.cfg -c "program $elf verify reset exit" ;;
  stm32f746g-disco:st-flash|nucleo-h743zi:st-flash) set -- st-flash --reset write "$bin" 0x08000000 ;;
  nucleo-h743zi:pyocd) set -- pyocd load -W -t stm32h743xx "$hex" ;;
  nrf52840-dk:pyocd) set -- pyocd load -W -t nrf52840 "$hex" ;;
  stm32f746g-disco:pyocd) fail "pyocd has no built-in stm32f746 target (its pack needs keil.com): use FLASHER=openocd or FLASHER=st-flash" ;;
  nrf52840-dk:st-flash) fail "st-flash only flashes STM32 parts through an ST-LINK: use FLASHER=pyocd or FLASHER=openocd" ;;
  *) fail "BOARD=$board is not a real board: flash stm32f746g-disco, nucleo-h743zi or nrf52840-dk" ;;
esac

command -v "$flasher" >/dev/null || fail "$flasher is not installed: $install (or pick another FLASHER=openocd|pyocd|st-flash)"

echo "$*"
log=$(mktemp)
timeout 120 "$@" >"$log" 2>&1
rc=$?
cat "$log"
if [ $rc -ne 0 ]; then
  if grep -qiE "no (connected|available) debug probe|couldn't find any st-link|found 0 stlink|open failed|no device found|unable to find|not connected|LIBUSB_ERROR" "$log"; then
    rm -f "$log"
    fail "no debug probe found: connect $board's debug USB port (ST-LINK or J-Link) and retry; $flasher exited with $rc"
  fi
  rm -f "$log"
  fail "$flasher failed with exit status $rc (output above)"
fi
rm -f "$log"
echo "flashed $elf to $board: read its output on the probe's serial port at 115200 baud"
