// libpng for PPImage, plus two C helpers that own a whole read and a whole write.
//
// Why the work lives here and not in Swift: libpng reports a fatal error with png_error, which
// longjmps to the setjmp of png_jmpbuf. A longjmp that crossed Swift frames would skip their cleanup
// and is undefined behaviour, so setjmp, every libpng call that can fail, the I/O callbacks and the
// longjmp target all sit in these C functions. Swift sees return codes, messages and malloc'd buffers.
#ifndef PPIMAGE_CLIBPNG_SHIM_H
#define PPIMAGE_CLIBPNG_SHIM_H

#include <setjmp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <png.h>
#include <zlib.h>

typedef struct {
    const unsigned char *data;
    size_t size;
    size_t offset;
} ppimage_png_source;

typedef struct {
    int width;
    int height;
    int color_type;         // PNG_COLOR_TYPE_* of the file
    int bit_depth;          // of the file: 1, 2, 4, 8 or 16
    int channels;           // samples per pixel in `pixels` (palette: 1 index)
    int sample_bytes;       // 1, or 2 for 16-bit files (big-endian samples, as stored)
    int palette_count;      // entries in `palette`
    unsigned char palette[256 * 3];
    unsigned char *pixels;  // [height, width, channels * sample_bytes], malloc'd; the caller frees it
    char message[256];
} ppimage_png_result;

static void ppimage_png_read_bytes(png_structp png, png_bytep out, size_t count) {
    ppimage_png_source *source = (ppimage_png_source *)png_get_io_ptr(png);
    if (count > source->size - source->offset) png_error(png, "file is truncated");
    memcpy(out, source->data + source->offset, count);
    source->offset += count;
}

static void ppimage_png_error(png_structp png, png_const_charp text) {
    char *message = (char *)png_get_error_ptr(png);
    snprintf(message, 256, "%s", text);
    png_longjmp(png, 1);
}

static void ppimage_png_warning(png_structp png, png_const_charp text) { (void)png; (void)text; }

static unsigned long ppimage_png_be32(const unsigned char *p) {
    return ((unsigned long)p[0] << 24) | ((unsigned long)p[1] << 16) | ((unsigned long)p[2] << 8) | p[3];
}

/// Pillow checks the CRC of every chunk before the first IDAT (and refuses the file on a mismatch) and
/// of none from the first IDAT on; libpng is told to ignore CRCs and this walk does Pillow's part.
/// Returns 0, or 1 with the message set.
static int ppimage_png_check_header_crcs(const unsigned char *data, size_t size, char *message) {
    size_t at = 8;
    while (size - at >= 12) {
        unsigned long length = ppimage_png_be32(data + at);
        const unsigned char *type = data + at + 4;
        if (memcmp(type, "IDAT", 4) == 0) return 0;
        if (length > size - at - 12) return 0;   // cut short: libpng reports it
        unsigned long crc = crc32(0L, type, (uInt)(length + 4));
        if (crc != ppimage_png_be32(data + at + 8 + length)) {
            snprintf(message, 256, "bad CRC in the %.4s chunk", (const char *)type);
            return 1;
        }
        at += 12 + length;
    }
    return 0;
}

/// Reads a whole PNG held in memory without colour conversions: 1/2/4-bit samples unpacked to one
/// byte each (gray scaled to 0...255 as libpng and Pillow both do, palette indices kept), 16-bit
/// samples kept big-endian, alpha kept. Return codes: 0 ok; 1 libpng error (message set);
/// 2 not a PNG signature; 3 more than max_pixels pixels; 4 out of memory.
static inline int ppimage_png_read(const unsigned char *data, size_t size, unsigned long long max_pixels,
                                   ppimage_png_result *result) {
    ppimage_png_source source = { data, size, 0 };
    png_structp png;
    png_infop info = NULL;
    unsigned char *volatile pixels = NULL;
    png_bytep *volatile rows = NULL;

    memset(result, 0, sizeof(*result));
    if (size < 8 || png_sig_cmp(data, 0, 8) != 0) return 2;
    if (ppimage_png_check_header_crcs(data, size, result->message)) return 1;
    png = png_create_read_struct(PNG_LIBPNG_VER_STRING, result->message, ppimage_png_error, ppimage_png_warning);
    if (png == NULL) return 4;
    info = png_create_info_struct(png);
    if (info == NULL) { png_destroy_read_struct(&png, NULL, NULL); return 4; }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, NULL);
        free(pixels);
        free(rows);
        result->pixels = NULL;
        return 1;
    }
    png_set_read_fn(png, &source, ppimage_png_read_bytes);
    png_set_crc_action(png, PNG_CRC_QUIET_USE, PNG_CRC_QUIET_USE);
    // Pillow's limit is on pixels, not on sides; libpng's default side limit (1,000,000) stays.
    png_read_info(png, info);

    png_uint_32 width = png_get_image_width(png, info), height = png_get_image_height(png, info);
    int color_type = png_get_color_type(png, info), bit_depth = png_get_bit_depth(png, info);
    result->width = (int)width;
    result->height = (int)height;
    result->color_type = color_type;
    result->bit_depth = bit_depth;
    if ((unsigned long long)width * height > max_pixels) {
        png_destroy_read_struct(&png, &info, NULL);
        return 3;
    }
    if (color_type == PNG_COLOR_TYPE_PALETTE) {
        png_colorp entries = NULL;
        int count = 0;
        if (png_get_PLTE(png, info, &entries, &count) == PNG_INFO_PLTE) {
            if (count > 256) count = 256;
            for (int i = 0; i < count; i++) {
                result->palette[3 * i + 0] = entries[i].red;
                result->palette[3 * i + 1] = entries[i].green;
                result->palette[3 * i + 2] = entries[i].blue;
            }
            result->palette_count = count;
        }
    }
    if (bit_depth < 8) {
        if (color_type == PNG_COLOR_TYPE_GRAY) png_set_expand_gray_1_2_4_to_8(png);
        else png_set_packing(png);
    }
    png_set_interlace_handling(png);
    png_read_update_info(png, info);

    result->channels = png_get_channels(png, info);
    result->sample_bytes = png_get_bit_depth(png, info) == 16 ? 2 : 1;
    size_t row_bytes = png_get_rowbytes(png, info);
    if (row_bytes != (size_t)width * result->channels * result->sample_bytes) png_error(png, "unexpected row size");
    pixels = (unsigned char *)malloc(row_bytes * height + 1);
    rows = (png_bytep *)malloc(sizeof(png_bytep) * height + 1);
    if (pixels == NULL || rows == NULL) png_error(png, "out of memory");
    for (png_uint_32 y = 0; y < height; y++) rows[y] = pixels + row_bytes * y;
    png_read_image(png, rows);
    // No png_read_end: Pillow does not need the chunks after the image data (a missing IEND is fine).

    png_destroy_read_struct(&png, &info, NULL);
    free(rows);
    result->pixels = pixels;
    return 0;
}

typedef struct {
    unsigned char *bytes;
    size_t count;
    size_t capacity;
} ppimage_png_sink;

static void ppimage_png_write_bytes(png_structp png, png_bytep data, size_t count) {
    ppimage_png_sink *sink = (ppimage_png_sink *)png_get_io_ptr(png);
    if (count > sink->capacity - sink->count) {
        size_t capacity = sink->capacity * 2 + count + 4096;
        unsigned char *grown = (unsigned char *)realloc(sink->bytes, capacity);
        if (grown == NULL) png_error(png, "out of memory");
        sink->bytes = grown;
        sink->capacity = capacity;
    }
    memcpy(sink->bytes + sink->count, data, count);
    sink->count += count;
}

static void ppimage_png_flush(png_structp png) { (void)png; }

/// Encodes 8-bit gray (channels 1) or RGB (channels 3) pixels [height, width, channels] as a PNG in
/// memory: zlib level 6, libpng's adaptive filters, no tIME or text chunks, so equal pixels give
/// equal bytes. Returns 0 and a malloc'd buffer in *out (the caller frees it), or 1 with message.
static inline int ppimage_png_write(const unsigned char *pixels, int width, int height, int channels,
                                    unsigned char **out, size_t *out_count, char *message) {
    png_structp png;
    png_infop info = NULL;
    // On the heap so that its contents, changed by the callback after setjmp, are defined after a longjmp.
    ppimage_png_sink *sink = (ppimage_png_sink *)calloc(1, sizeof(ppimage_png_sink));
    png_bytep *volatile rows = NULL;

    *out = NULL;
    *out_count = 0;
    message[0] = 0;
    if (sink == NULL) { snprintf(message, 256, "out of memory"); return 1; }
    png = png_create_write_struct(PNG_LIBPNG_VER_STRING, message, ppimage_png_error, ppimage_png_warning);
    if (png == NULL) { free(sink); snprintf(message, 256, "out of memory"); return 1; }
    info = png_create_info_struct(png);
    if (info == NULL) { png_destroy_write_struct(&png, NULL); free(sink); snprintf(message, 256, "out of memory"); return 1; }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        free(sink->bytes);
        free(sink);
        free(rows);
        return 1;
    }
    png_set_write_fn(png, sink, ppimage_png_write_bytes, ppimage_png_flush);
    png_set_compression_level(png, 6);
    png_set_IHDR(png, info, (png_uint_32)width, (png_uint_32)height, 8,
                 channels == 1 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    rows = (png_bytep *)malloc(sizeof(png_bytep) * (size_t)height + 1);
    if (rows == NULL) png_error(png, "out of memory");
    for (int y = 0; y < height; y++) rows[y] = (png_bytep)(pixels + (size_t)y * width * channels);
    png_write_info(png, info);
    png_write_image(png, rows);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    free(rows);
    *out = sink->bytes;
    *out_count = sink->count;
    free(sink);
    return 0;
}

#endif
