/*
 * edugate_link.h - the EduGate kit link for Arduino-class boards: COBS framing, CRC-32 and frames.
 *
 * Header-only, C99 and C++ (Arduino), no allocation, no dependencies beyond <stdint.h>/<stddef.h>.
 * Specification: docs/firmware-bridge.md. Tested with gcc against firmware_bridge/vectors.json, the
 * same vectors the gateway's codec and the MicroPython node are tested against.
 *
 * A frame on the wire is COBS(header + payload + CRC-32 little-endian) followed by one 0x00 byte.
 * Header (6 bytes): version u8, type u8, seq u16 LE, payload length u16 LE.
 * CRC-32/ISO-HDLC (zlib's): reflected polynomial 0xEDB88320, init and final XOR 0xFFFFFFFF.
 *
 * Sending:   uint8_t wire[EDL_MAX_WIRE]; size_t n = edl_frame_encode(1, EDL_LOG, seq++, p, len, wire, sizeof wire);
 *            Serial.write(wire, n);
 * Receiving: static edl_rx rx;  (zero-initialised)   edl_frame f;
 *            while (Serial.available()) { int r = edl_rx_feed(&rx, Serial.read(), &f);
 *                if (r == 1) handle(&f);  else if (r < 0) bad_frames++; }
 */
#ifndef EDUGATE_LINK_H
#define EDUGATE_LINK_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define EDL_PROTOCOL_VERSION 1
#define EDL_HEADER_BYTES 6
#define EDL_CRC_BYTES 4
#ifndef EDL_MAX_PAYLOAD
#define EDL_MAX_PAYLOAD 1024 /* the protocol's limit; a small board may define less before including */
#endif
#define EDL_MAX_BODY (EDL_HEADER_BYTES + EDL_MAX_PAYLOAD + EDL_CRC_BYTES)
#define EDL_MAX_ENCODED (EDL_MAX_BODY + EDL_MAX_BODY / 254 + 1)
#define EDL_MAX_WIRE (EDL_MAX_ENCODED + 1)

/* message types */
enum {
    EDL_HELLO = 0x01, EDL_HELLO_REQUEST = 0x02, EDL_READINGS = 0x10, EDL_COMMAND = 0x20, EDL_ACK = 0x30,
    EDL_NACK = 0x31, EDL_LOG = 0x40, EDL_FW_BEGIN = 0x50, EDL_FW_CHUNK = 0x51, EDL_FW_STATUS = 0x52,
    EDL_FW_COMMIT = 0x53
};

/* decode results: 0 = a frame, negative = why not */
enum {
    EDL_OK = 0, EDL_ERR_EMPTY = -1, EDL_ERR_OVERSIZED = -2, EDL_ERR_COBS = -3, EDL_ERR_SHORT = -4,
    EDL_ERR_CRC = -5, EDL_ERR_LENGTH = -6
};

typedef struct {
    uint8_t version;
    uint8_t type;
    uint16_t seq;
    uint16_t length;        /* payload bytes */
    const uint8_t *payload; /* points into the buffer given to the decoder */
} edl_frame;

static inline uint32_t edl_crc32_update(uint32_t crc, const uint8_t *data, size_t len) {
    /* nibble table: 64 bytes of flash instead of 1 KiB */
    static const uint32_t t[16] = {
        0x00000000UL, 0x1DB71064UL, 0x3B6E20C8UL, 0x26D930ACUL, 0x76DC4190UL, 0x6B6B51F4UL,
        0x4DB26158UL, 0x5005713CUL, 0xEDB88320UL, 0xF00F9344UL, 0xD6D6A3E8UL, 0xCB61B38CUL,
        0x9B64C2B0UL, 0x86D3D2D4UL, 0xA00AE278UL, 0xBDBDF21CUL};
    size_t i;
    for (i = 0; i < len; i++) {
        crc ^= data[i];
        crc = (crc >> 4) ^ t[crc & 0x0F];
        crc = (crc >> 4) ^ t[crc & 0x0F];
    }
    return crc;
}

static inline uint32_t edl_crc32(const uint8_t *data, size_t len) {
    return edl_crc32_update(0xFFFFFFFFUL, data, len) ^ 0xFFFFFFFFUL;
}

/* COBS-encode len bytes; out needs len + len/254 + 1 bytes. Returns the encoded length (no delimiter). */
static inline size_t edl_cobs_encode(const uint8_t *in, size_t len, uint8_t *out) {
    size_t o = 1, code_at = 0, i;
    uint8_t code = 1;
    for (i = 0; i < len; i++) {
        if (in[i] == 0) {
            out[code_at] = code;
            code_at = o++;
            code = 1;
        } else {
            out[o++] = in[i];
            code++;
            if (code == 0xFF && i + 1 < len) {
                out[code_at] = code;
                code_at = o++;
                code = 1;
            }
        }
    }
    out[code_at] = code;
    return o;
}

/* COBS-decode; returns the decoded length, or EDL_ERR_COBS / EDL_ERR_OVERSIZED (more than cap bytes). */
static inline long edl_cobs_decode(const uint8_t *in, size_t len, uint8_t *out, size_t cap) {
    size_t i = 0, o = 0, j, end;
    while (i < len) {
        uint8_t code = in[i];
        if (code == 0) return EDL_ERR_COBS;
        end = i + code;
        if (end > len) return EDL_ERR_COBS;
        for (j = i + 1; j < end; j++) {
            if (in[j] == 0) return EDL_ERR_COBS;
            if (o >= cap) return EDL_ERR_OVERSIZED;
            out[o++] = in[j];
        }
        i = end;
        if (code < 0xFF && i < len) {
            if (o >= cap) return EDL_ERR_OVERSIZED;
            out[o++] = 0;
        }
    }
    return (long)o;
}

/* One frame's wire bytes (COBS + delimiter) into out (cap bytes; EDL_MAX_WIRE always suffices).
 * Returns the number of bytes to send, or 0 if the payload is too long or out too small. */
static inline size_t edl_frame_encode(uint8_t version, uint8_t type, uint16_t seq, const uint8_t *payload,
                                      uint16_t len, uint8_t *out, size_t cap) {
    uint8_t body[EDL_MAX_BODY];
    size_t n, i;
    uint32_t crc;
    if (len > EDL_MAX_PAYLOAD) return 0;
    n = (size_t)EDL_HEADER_BYTES + len + EDL_CRC_BYTES;
    if (cap < n + n / 254 + 2) return 0;
    body[0] = version;
    body[1] = type;
    body[2] = (uint8_t)(seq & 0xFF);
    body[3] = (uint8_t)(seq >> 8);
    body[4] = (uint8_t)(len & 0xFF);
    body[5] = (uint8_t)(len >> 8);
    for (i = 0; i < len; i++) body[EDL_HEADER_BYTES + i] = payload[i];
    crc = edl_crc32(body, EDL_HEADER_BYTES + len);
    for (i = 0; i < 4; i++) body[EDL_HEADER_BYTES + len + i] = (uint8_t)(crc >> (8 * i));
    n = edl_cobs_encode(body, n, out);
    out[n++] = 0;
    return n;
}

/* Decode the bytes of one frame between delimiters. scratch (cap bytes, EDL_MAX_BODY suffices) receives
 * the decoded body; f->payload points into it. Returns EDL_OK or a negative EDL_ERR_*. */
static inline int edl_frame_decode(const uint8_t *enc, size_t len, uint8_t *scratch, size_t cap, edl_frame *f) {
    long n;
    uint32_t sent, crc;
    size_t body;
    if (len == 0) return EDL_ERR_EMPTY;
    if (len > EDL_MAX_ENCODED) return EDL_ERR_OVERSIZED;
    n = edl_cobs_decode(enc, len, scratch, cap);
    if (n < 0) return (int)n;
    if (n < EDL_HEADER_BYTES + EDL_CRC_BYTES) return EDL_ERR_SHORT;
    body = (size_t)n - EDL_CRC_BYTES;
    sent = (uint32_t)scratch[body] | ((uint32_t)scratch[body + 1] << 8) | ((uint32_t)scratch[body + 2] << 16) |
           ((uint32_t)scratch[body + 3] << 24);
    crc = edl_crc32(scratch, body);
    if (crc != sent) return EDL_ERR_CRC;
    f->version = scratch[0];
    f->type = scratch[1];
    f->seq = (uint16_t)(scratch[2] | (scratch[3] << 8));
    f->length = (uint16_t)(scratch[4] | (scratch[5] << 8));
    if (f->version == EDL_PROTOCOL_VERSION && (size_t)f->length != body - EDL_HEADER_BYTES) return EDL_ERR_LENGTH;
    f->payload = scratch + EDL_HEADER_BYTES;
    return EDL_OK;
}

/* A receiver fed one byte at a time. Zero-initialise it. */
typedef struct {
    uint8_t enc[EDL_MAX_ENCODED];
    uint8_t body[EDL_MAX_BODY];
    size_t n;
    uint8_t skipping;
} edl_rx;

/* Returns 1 when f holds a frame (valid until the next call), 0 when more bytes are needed,
 * a negative EDL_ERR_* when a bad frame ended (or a run too long was dropped). Empty frames are skipped. */
static inline int edl_rx_feed(edl_rx *rx, uint8_t byte, edl_frame *f) {
    int r;
    size_t n;
    if (byte != 0) {
        if (rx->skipping) return 0;
        if (rx->n >= EDL_MAX_ENCODED) {
            rx->n = 0;
            rx->skipping = 1;
            return EDL_ERR_OVERSIZED;
        }
        rx->enc[rx->n++] = byte;
        return 0;
    }
    n = rx->n;
    rx->n = 0;
    if (rx->skipping || n == 0) {
        rx->skipping = 0;
        return 0;
    }
    r = edl_frame_decode(rx->enc, n, rx->body, sizeof rx->body, f);
    return r == EDL_OK ? 1 : r;
}

#ifdef __cplusplus
}
#endif

#endif /* EDUGATE_LINK_H */
