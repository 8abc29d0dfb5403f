/* Test harness for firmware_bridge/arduino/edugate_link.h: one request per line on stdin, one answer on stdout.
 *   crc HEX              -> crc as 8 hex digits
 *   cobs HEX             -> COBS encoding as hex
 *   enc VER TYPE SEQ HEX -> wire bytes as hex (with the delimiter), or "err"
 *   rx HEX               -> what edl_rx_feed makes of the bytes: "frame VER TYPE SEQ HEX" or "err N" per item, "end"
 * HEX is "-" for no bytes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edugate_link.h"

static uint8_t buf[1 << 16];
static char line[1 << 18];

static size_t unhex(const char *s, uint8_t *out) {
    size_t n = 0;
    if (strcmp(s, "-") == 0) return 0;
    while (s[0] && s[1]) {
        unsigned v;
        sscanf(s, "%2x", &v);
        out[n++] = (uint8_t)v;
        s += 2;
    }
    return n;
}

static void puthex(const uint8_t *p, size_t n) {
    size_t i;
    if (n == 0) fputs("-", stdout);
    for (i = 0; i < n; i++) printf("%02x", p[i]);
}

int main(void) {
    static uint8_t out[1 << 17];
    static edl_rx rx;
    edl_frame f;
    while (fgets(line, sizeof line, stdin)) {
        char cmd[8], hex[sizeof line];
        unsigned ver, type, seq;
        line[strcspn(line, "\n")] = 0;
        if (sscanf(line, "enc %u %u %u %s", &ver, &type, &seq, hex) == 4) {
            size_t n = unhex(hex, buf);
            size_t w = edl_frame_encode((uint8_t)ver, (uint8_t)type, (uint16_t)seq, buf, (uint16_t)n, out, sizeof out);
            if (n > EDL_MAX_PAYLOAD || w == 0) fputs("err", stdout); else puthex(out, w);
        } else if (sscanf(line, "%7s %s", cmd, hex) == 2) {
            size_t n = unhex(hex, buf), i;
            if (strcmp(cmd, "crc") == 0) {
                printf("%08lx", (unsigned long)edl_crc32(buf, n));
            } else if (strcmp(cmd, "cobs") == 0) {
                puthex(out, edl_cobs_encode(buf, n, out));
            } else if (strcmp(cmd, "rx") == 0) {
                memset(&rx, 0, sizeof rx);
                for (i = 0; i < n; i++) {
                    int r = edl_rx_feed(&rx, buf[i], &f);
                    if (r == 1) {
                        printf("frame %u %u %u ", f.version, f.type, f.seq);
                        puthex(f.payload, f.length);
                        fputs(" ", stdout);
                    } else if (r < 0) {
                        printf("err %d ", r);
                    }
                }
                fputs("end", stdout);
            } else {
                fputs("?", stdout);
            }
        } else {
            fputs("?", stdout);
        }
        fputs("\n", stdout);
        fflush(stdout);
    }
    return 0;
}
