/* print.c: text and decimal integers on the board's output, without stdio. */
#ifndef BNN_PRINT_H
#define BNN_PRINT_H

void print(const char *text);
void print_int(int value);

#endif
