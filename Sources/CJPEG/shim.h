// libjpeg(-turbo) for PPImage, plus one C helper that owns the whole decode.
//
// Why the decode lives here and not in Swift: libjpeg reports a fatal error by calling
// err->error_exit, which must not return; the only way out is longjmp to a setjmp taken earlier.
// A longjmp that crossed Swift frames would skip their cleanup (releases, defers) and is undefined
// behaviour, so setjmp, every libjpeg call that can fail, and the longjmp target all sit in this one
// C function. Swift only sees its return code, the message and a malloc'd pixel buffer.
#ifndef PPIMAGE_CJPEG_SHIM_H
#define PPIMAGE_CJPEG_SHIM_H

#include <setjmp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jpeglib.h>
#include <jerror.h>

typedef struct {
    int width;
    int height;
    int components;        // 1 (grayscale), 3 (RGB) or 4 (CMYK as libjpeg returns it)
    int frame_components;  // number of components in the SOF marker
    int progressive;
    int saw_adobe;         // an Adobe APP14 marker was present
    int adobe_transform;
    unsigned char *pixels; // [height, width, components], malloc'd; the caller frees it
    char message[JMSG_LENGTH_MAX + 64];
} ppimage_jpeg_result;

typedef struct {
    struct jpeg_error_mgr base;
    jmp_buf escape;
    int hit_eof;           // libjpeg's memory source ran out and inserted a fake EOI
} ppimage_jpeg_error;

static void ppimage_jpeg_error_exit(j_common_ptr cinfo) {
    ppimage_jpeg_error *error = (ppimage_jpeg_error *)cinfo->err;
    longjmp(error->escape, 1);
}

// Warnings (corrupt data that libjpeg repairs) are ignored as Pillow ignores them; only running
// out of data is recorded, because Pillow refuses truncated files.
static void ppimage_jpeg_emit_message(j_common_ptr cinfo, int level) {
    ppimage_jpeg_error *error = (ppimage_jpeg_error *)cinfo->err;
    if (level < 0 && error->base.msg_code == JWRN_JPEG_EOF) error->hit_eof = 1;
}

static void ppimage_jpeg_output_message(j_common_ptr cinfo) { (void)cinfo; }

/// Decodes a whole JPEG held in memory. Return codes: 0 ok; 1 libjpeg error (message set);
/// 2 truncated; 3 too many pixels (more than max_pixels); 4 out of memory; 5 unsupported colour space.
/// out_color: 0 = as Pillow's mode from the SOF component count (1 -> gray, 3 -> RGB, 4 -> CMYK).
static inline int ppimage_jpeg_decode(const unsigned char *data, unsigned long size,
                                      unsigned long long max_pixels, ppimage_jpeg_result *result) {
    struct jpeg_decompress_struct cinfo;
    ppimage_jpeg_error error;
    // volatile: these are changed between setjmp and a possible longjmp and read after it.
    unsigned char *volatile pixels = NULL;
    volatile int code = 0;

    memset(result, 0, sizeof(*result));
    memset(&cinfo, 0, sizeof(cinfo));
    cinfo.err = jpeg_std_error(&error.base);
    error.base.error_exit = ppimage_jpeg_error_exit;
    error.base.emit_message = ppimage_jpeg_emit_message;
    error.base.output_message = ppimage_jpeg_output_message;
    error.hit_eof = 0;

    if (setjmp(error.escape)) {
        char text[JMSG_LENGTH_MAX];
        error.base.format_message((j_common_ptr)&cinfo, text);
        snprintf(result->message, sizeof(result->message), "%s", text);
        jpeg_destroy_decompress(&cinfo);
        free(pixels);
        result->pixels = NULL;
        return code != 0 ? code : 1;
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, data, size);
    jpeg_save_markers(&cinfo, JPEG_APP0 + 14, 0);
    jpeg_read_header(&cinfo, TRUE);
    if (error.hit_eof) { code = 2; ERREXIT(&cinfo, JWRN_JPEG_EOF); }

    result->width = (int)cinfo.image_width;
    result->height = (int)cinfo.image_height;
    result->frame_components = cinfo.num_components;
    result->progressive = cinfo.progressive_mode ? 1 : 0;
    result->saw_adobe = cinfo.saw_Adobe_marker ? 1 : 0;
    result->adobe_transform = cinfo.Adobe_transform;
    if ((unsigned long long)cinfo.image_width * cinfo.image_height > max_pixels) {
        jpeg_destroy_decompress(&cinfo);
        return 3;
    }
    switch (cinfo.num_components) {
    case 1: cinfo.out_color_space = JCS_GRAYSCALE; break;
    case 3: cinfo.out_color_space = JCS_RGB; break;
    case 4: cinfo.out_color_space = JCS_CMYK; break;   // libjpeg turns YCCK into CMYK
    default:
        snprintf(result->message, sizeof(result->message), "%d colour components", cinfo.num_components);
        jpeg_destroy_decompress(&cinfo);
        return 5;
    }
    jpeg_start_decompress(&cinfo);
    if (error.hit_eof) { code = 2; ERREXIT(&cinfo, JWRN_JPEG_EOF); }
    result->components = cinfo.output_components;
    size_t row_bytes = (size_t)cinfo.output_width * (size_t)cinfo.output_components;
    pixels = (unsigned char *)malloc(row_bytes * cinfo.output_height + 1);
    if (pixels == NULL) { jpeg_destroy_decompress(&cinfo); return 4; }
    while (cinfo.output_scanline < cinfo.output_height) {
        JSAMPROW row = pixels + row_bytes * cinfo.output_scanline;
        jpeg_read_scanlines(&cinfo, &row, 1);
        if (error.hit_eof) { code = 2; ERREXIT(&cinfo, JWRN_JPEG_EOF); }
    }
    // Read on to the EOI marker: Pillow refuses a file that ends without it, even with every pixel there.
    jpeg_finish_decompress(&cinfo);
    if (error.hit_eof) { code = 2; ERREXIT(&cinfo, JWRN_JPEG_EOF); }
    jpeg_destroy_decompress(&cinfo);
    result->pixels = pixels;
    return 0;
}

#endif
