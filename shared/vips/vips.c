#include "vips.h"

#include <string.h>

#ifdef __GLIBC__
#include <malloc.h>
#endif

// Only these loaders may run; everything else (matload, magick, pdf, ...)
// stays blocked even if the library was built with it.
static const char *allowed_loaders[] = {
	"VipsForeignLoadJpeg",
	"VipsForeignLoadPng",
	"VipsForeignLoadWebp",
	"VipsForeignLoadNsgif",
	"VipsForeignLoadHeif",
	"VipsForeignLoadSvg",
	NULL,
};

// libvips reports damaged input as GLib warnings on stderr; the proxy logs
// its own structured line for every failure instead.
static void drop_log(const gchar *domain, GLogLevelFlags level, const gchar *message, gpointer data) {
}

int mp_start(int concurrency) {
#ifdef __GLIBC__
	// glibc gives every libvips worker thread its own malloc arena, which
	// holds on to freed memory: most of the process's peak RSS. Two arenas
	// cost no measurable speed.
	mallopt(M_ARENA_MAX, 2);
#endif
	if (VIPS_INIT("media-proxy"))
		return -1;
	g_log_set_handler("VIPS", G_LOG_LEVEL_WARNING | G_LOG_LEVEL_MESSAGE | G_LOG_LEVEL_INFO, drop_log, NULL);
	vips_block_untrusted_set(TRUE);
	vips_operation_block_set("VipsForeignLoad", TRUE);
	for (int i = 0; allowed_loaders[i]; i++) {
		if (!g_type_from_name(allowed_loaders[i])) {
			vips_error("mp_start", "loader %s missing", allowed_loaders[i]);
			return -1;
		}
		vips_operation_block_set(allowed_loaders[i], FALSE);
	}
	// Every request works on a different image: the operation cache would
	// only hold memory.
	vips_cache_set_max(0);
	vips_cache_set_max_mem(0);
	vips_cache_set_max_files(0);
	if (concurrency > 0)
		vips_concurrency_set(concurrency);
	return 0;
}

int mp_header(const void *buf, size_t len, int all_pages, VipsImage **out) {
	*out = vips_image_new_from_buffer(buf, len, all_pages ? "n=-1" : "", NULL);
	return *out ? 0 : -1;
}

// premultiply_line premultiplies n bytes of 8-bit RGBA in 8 bits:
// c * a / 255 rounded down, which is what libvips' float premultiply and
// its cast back to 8 bits give, so the thumbnail is the same to the bit.
// Sixteen-bit lanes of GCC's portable vectors (SSE2 on x86-64, NEON on
// arm64): two pixels per step.
typedef unsigned char mp_u8x8 __attribute__((vector_size(8)));
typedef unsigned short mp_u16x8 __attribute__((vector_size(16)));

static void premultiply_line(const VipsPel *p, VipsPel *q, int n) {
	const mp_u16x8 alpha_of = {3, 3, 3, 3, 7, 7, 7, 7};
	const mp_u16x8 is_alpha = {0, 0, 0, 0xffff, 0, 0, 0, 0xffff};
	int x = 0;

	for (; x + 8 <= n; x += 8) {
		mp_u8x8 v8;
		memcpy(&v8, p + x, 8);
		mp_u16x8 v = __builtin_convertvector(v8, mp_u16x8);
		mp_u16x8 m = v * __builtin_shuffle(v, alpha_of) + 1;
		// With m = c * a + 1, (m + m / 256) / 256 is c * a / 255 rounded
		// down, for every c and a (checked exhaustively), within 16 bits.
		m = (m + (m >> 8)) >> 8;
		m = (m & ~is_alpha) | (v & is_alpha);
		mp_u8x8 o = __builtin_convertvector(m, mp_u8x8);
		memcpy(q + x, &o, 8);
	}
	for (; x < n; x += 4) {
		unsigned a = p[x + 3];
		for (int i = 0; i < 3; i++) {
			unsigned m = p[x + i] * a + 1;
			q[x + i] = (m + (m >> 8)) >> 8;
		}
		q[x + 3] = a;
	}
}

static int premultiply_generate(VipsRegion *out, void *seq, void *a, void *b, gboolean *stop) {
	VipsRegion *ir = (VipsRegion *) seq;
	VipsRect *r = &out->valid;

	if (vips_region_prepare(ir, r))
		return -1;
	for (int y = 0; y < r->height; y++)
		premultiply_line(VIPS_REGION_ADDR(ir, r->left, r->top + y),
			VIPS_REGION_ADDR(out, r->left, r->top + y), r->width * 4);
	return 0;
}

// premultiply8 premultiplies 8-bit RGBA and stays in 8 bits, where
// vips_premultiply (libvips 8.18) goes through float: on a 512x512 emoji
// that float pass and its cast back cost more than the resize after it.
static int premultiply8(VipsImage *in, VipsImage **out) {
	*out = vips_image_new();
	// out holds in for as long as it lives.
	g_object_ref(in);
	vips_object_local(*out, in);
	if (vips_image_pipelinev(*out, VIPS_DEMAND_STYLE_THINSTRIP, in, NULL) ||
		vips_image_generate(*out, vips_start_one, premultiply_generate, vips_stop_one, in, NULL)) {
		g_object_unref(*out);
		*out = NULL;
		return -1;
	}
	return 0;
}

// thumbnail_rgba8 is vips_thumbnail (libvips 8.18) for the case the
// emoji path meets most, an 8-bit sRGB image with alpha from a loader
// without shrink-on-load (PNG, GIF), shrunk, upright: the same shrink
// factors, the same resize and unpremultiply, but premultiplied in 8 bits
// (premultiply8). It answers 1 when in is not such an image, and the
// caller then uses vips_thumbnail.
static int thumbnail_rgba8(VipsImage *in, VipsImage **out, int width, int height) {
	VipsObject *scope;
	VipsImage **t;
	const char *loader = NULL;
	int page_height = vips_image_get_page_height(in);
	int pages = in->Ysize / page_height;
	double hshrink, vshrink;

	if (vips_image_get_typeof(in, VIPS_META_LOADER) == 0 ||
		vips_image_get_string(in, VIPS_META_LOADER, &loader) ||
		(strcmp(loader, "pngload_buffer") != 0 && strcmp(loader, "gifload_buffer") != 0) ||
		in->Coding != VIPS_CODING_NONE || in->BandFmt != VIPS_FORMAT_UCHAR || in->Bands != 4 ||
		in->Type != VIPS_INTERPRETATION_sRGB || vips_image_get_orientation(in) != 1 ||
		page_height * pages != in->Ysize)
		return 1;
	// vips_thumbnail_calculate_shrink, for size=down without crop: fit
	// the box, never enlarge, never below one pixel.
	hshrink = (double) in->Xsize / width;
	vshrink = (double) page_height / height;
	hshrink = vshrink = VIPS_MAX(1, VIPS_MAX(hshrink, vshrink));
	hshrink = VIPS_MIN(hshrink, in->Xsize);
	vshrink = VIPS_MIN(vshrink, page_height);
	if (hshrink == 1.0 || vshrink == 1.0)
		return 1; // thumbnail neither premultiplies nor resizes much
	if (pages > 1) // every page must land on whole rows
		vshrink = (double) in->Ysize / (rint(page_height / vshrink) * pages);

	scope = VIPS_OBJECT(vips_image_new());
	t = (VipsImage **) vips_object_local_array(scope, 4);
	if (premultiply8(in, &t[0]) ||
		vips_resize(t[0], &t[1], 1.0 / hshrink, "vscale", 1.0 / vshrink, NULL) ||
		vips_unpremultiply(t[1], &t[2], NULL) ||
		vips_cast(t[2], &t[3], VIPS_FORMAT_UCHAR, NULL)) {
		g_object_unref(scope);
		return -1;
	}
	if (pages > 1) {
		if (vips_copy(t[3], out, NULL)) {
			g_object_unref(scope);
			return -1;
		}
		vips_image_set_int(*out, VIPS_META_PAGE_HEIGHT, rint(page_height / vshrink));
	}
	else {
		*out = t[3];
		g_object_ref(*out);
	}
	g_object_unref(scope);
	return 0;
}

// mp_thumbnail_buffer resizes with thumbnail_rgba8 where it applies and
// vips_thumbnail otherwise; path MP_THUMBNAIL_FAST or _LIBVIPS forces one
// (for tests: the fast path answers 1 where it does not apply).
int mp_thumbnail_buffer(void *buf, size_t len, VipsImage **out, int width, int height, int enlarge, int all_pages, int fail_on, int path) {
	// fail_on goes in the loader's option string too: thumbnail's own
	// fail_on property does not reach every loader.
	char options[64];
	const char *fail = vips_enum_nick(VIPS_TYPE_FAIL_ON, fail_on);
	g_snprintf(options, sizeof(options), "%sfail_on=%s", all_pages ? "n=-1," : "", fail ? fail : "none");
	if (path != MP_THUMBNAIL_LIBVIPS && !enlarge) {
		VipsImage *in = vips_image_new_from_buffer(buf, len, options, "access", VIPS_ACCESS_SEQUENTIAL, NULL);
		int r;
		if (!in)
			return -1;
		r = thumbnail_rgba8(in, out, width, height);
		g_object_unref(in);
		if (r <= 0 || path == MP_THUMBNAIL_FAST)
			return r;
	}
	if (path == MP_THUMBNAIL_FAST)
		return 1;
	return vips_thumbnail_buffer(buf, len, out, width,
		"height", height,
		"size", enlarge ? VIPS_SIZE_BOTH : VIPS_SIZE_DOWN,
		"option_string", options,
		"fail_on", fail_on,
		NULL);
}

int mp_thumbnail_jpeg(void *buf, size_t len, VipsImage **out, int shrink, int width, int height, int fail_on) {
	VipsImage *in;
	int r;
	if (vips_jpegload_buffer(buf, len, &in,
			"shrink", shrink,
			"fail_on", fail_on,
			"access", VIPS_ACCESS_SEQUENTIAL,
			NULL))
		return -1;
	// thumbnail_image still applies the orientation and colour profile.
	r = vips_thumbnail_image(in, out, width,
		"height", height,
		"size", VIPS_SIZE_DOWN,
		NULL);
	g_object_unref(in);
	return r;
}

int mp_thumbnail_image(VipsImage *in, VipsImage **out, int width, int height, int enlarge) {
	return vips_thumbnail_image(in, out, width,
		"height", height,
		"size", enlarge ? VIPS_SIZE_BOTH : VIPS_SIZE_DOWN,
		NULL);
}

VipsImage *mp_from_rgba(const void *pix, size_t len, int width, int height) {
	VipsImage *im = vips_image_new_from_memory_copy(pix, len, width, height, 4, VIPS_FORMAT_UCHAR);
	if (im)
		im->Type = VIPS_INTERPRETATION_sRGB;
	return im;
}

// mp_from_rgba_frames copies frames of packed RGBA stacked top to bottom
// into one image that savers treat as an animation.
VipsImage *mp_from_rgba_frames(const void *pix, size_t len, int width, int page_height, int pages, int *delays, int loop) {
	VipsImage *im = mp_from_rgba(pix, len, width, page_height * pages);
	if (!im)
		return NULL;
	vips_image_set_int(im, VIPS_META_PAGE_HEIGHT, page_height);
	vips_image_set_int(im, VIPS_META_N_PAGES, pages);
	vips_image_set_array_int(im, "delay", delays, pages);
	vips_image_set_int(im, "loop", loop);
	return im;
}

// mp_to_rgba renders an image as packed 8-bit sRGB with alpha.
int mp_to_rgba(VipsImage *in, void **buf, size_t *len) {
	VipsObject *scope = VIPS_OBJECT(vips_image_new());
	VipsImage **t = (VipsImage **) vips_object_local_array(scope, 3);
	VipsImage *x;

	*buf = NULL;
	if (vips_colourspace(in, &t[0], VIPS_INTERPRETATION_sRGB, NULL))
		goto done;
	x = t[0];
	if (!vips_image_hasalpha(x)) {
		if (vips_bandjoin_const1(x, &t[1], 255, NULL))
			goto done;
		x = t[1];
	}
	if (vips_cast_uchar(x, &t[2], NULL))
		goto done;
	x = t[2];
	if (x->Bands != 4) {
		vips_error("mp_to_rgba", "%d bands, want 4", x->Bands);
		goto done;
	}
	*buf = vips_image_write_to_memory(x, len);
done:
	g_object_unref(scope);
	return *buf ? 0 : -1;
}

int mp_webpsave(VipsImage *in, void **buf, size_t *len, int quality, int alpha_quality, int effort, int smart_subsample) {
	return vips_webpsave_buffer(in, buf, len,
		"Q", quality,
		"alpha_q", alpha_quality,
		"effort", effort,
		"smart_subsample", smart_subsample,
		"mixed", TRUE,
		"keep", VIPS_FOREIGN_KEEP_NONE,
		NULL);
}

int mp_avifsave(VipsImage *in, void **buf, size_t *len) {
	return vips_heifsave_buffer(in, buf, len,
		"compression", VIPS_FOREIGN_HEIF_COMPRESSION_AV1,
		"effort", 0,
		"keep", VIPS_FOREIGN_KEEP_NONE,
		NULL);
}

int mp_pngsave(VipsImage *in, void **buf, size_t *len) {
	return vips_pngsave_buffer(in, buf, len, "keep", VIPS_FOREIGN_KEEP_NONE, NULL);
}

// mp_load_first opens the first frame of an image at its full size,
// lazily, for one top-to-bottom read.
int mp_load_first(const void *buf, size_t len, int fail_on, VipsImage **out) {
	*out = vips_image_new_from_buffer(buf, len, "",
		"access", VIPS_ACCESS_SEQUENTIAL,
		"fail_on", fail_on,
		NULL);
	return *out ? 0 : -1;
}

// mp_entropy is the entropy, in bits, of the histogram of an image's grey
// values: the first band after conversion to greyscale. Alpha is ignored,
// so transparent pixels count with the colour they store.
int mp_entropy(VipsImage *in, double *entropy) {
	VipsObject *scope = VIPS_OBJECT(vips_image_new());
	VipsImage **t = (VipsImage **) vips_object_local_array(scope, 3);
	int r = -1;

	if (!vips_colourspace(in, &t[0], VIPS_INTERPRETATION_B_W, NULL) &&
		!vips_extract_band(t[0], &t[1], 0, NULL) &&
		!vips_hist_find(t[1], &t[2], NULL) &&
		!vips_hist_entropy(t[2], entropy, NULL))
		r = 0;
	g_object_unref(scope);
	return r;
}

// mp_badge turns a thumbnail that fits size x size into the badge mask with
// the reference's operations, in the order its image pipeline runs them
// (not the order its code lists them in): flatten on black, greyscale,
// centre on a black size x size square, raise the contrast, then stretch
// the lightness between its 1st and 99th percentiles taken over the whole
// square, letterbox included. The result has two bands: white, and the
// mask as alpha.
int mp_badge(VipsImage *in, VipsImage **out, int size, double contrast) {
	VipsObject *scope = VIPS_OBJECT(vips_image_new());
	VipsImage **t = (VipsImage **) vips_object_local_array(scope, 15);
	VipsImage *x = in;
	VipsInterpretation grey;
	int lo, hi;

	if (vips_image_hasalpha(x)) {
		if (vips_flatten(x, &t[0], NULL))
			goto fail;
		x = t[0];
	}
	if (vips_colourspace(x, &t[1], VIPS_INTERPRETATION_B_W, NULL) ||
		vips_extract_band(t[1], &t[2], 0, NULL) ||
		vips_embed(t[2], &t[3], (size - t[2]->Xsize) / 2, (size - t[2]->Ysize) / 2, size, size,
			"extend", VIPS_EXTEND_BLACK, NULL))
		goto fail;
	// B_W, or GREY16 for 16-bit input. The contrast is clipped to 8 bits
	// for the one and left unclipped in float for the other (with its
	// offset on the 8-bit scale all the same), as the reference's is.
	grey = vips_image_get_interpretation(t[3]);
	if (vips_linear1(t[3], &t[4], contrast, 128 - 128 * contrast,
			"uchar", grey != VIPS_INTERPRETATION_GREY16, NULL))
		goto fail;
	// The percentiles and the stretch read the small square several
	// times: render it once.
	if (!(t[5] = vips_image_copy_memory(t[4])))
		goto fail;
	x = t[5];
	if (vips_colourspace(x, &t[6], VIPS_INTERPRETATION_LAB, NULL) ||
		vips_extract_band(t[6], &t[7], 0, NULL) ||
		vips_percent(t[7], 1, &lo, NULL) ||
		vips_percent(t[7], 99, &hi, NULL))
		goto fail;
	// A range of one step or less is left as it is.
	if (abs(hi - lo) > 1) {
		double f = 100.0 / (hi - lo);
		if (vips_linear1(t[7], &t[8], f, -lo * f, NULL) ||
			vips_extract_band(t[6], &t[9], 1, "n", 2, NULL) ||
			vips_bandjoin2(t[8], t[9], &t[10], NULL) ||
			vips_colourspace(t[10], &t[11], grey, NULL))
			goto fail;
		x = t[11];
	}
	if (vips_colourspace(x, &t[12], VIPS_INTERPRETATION_B_W, "source_space", grey, NULL) ||
		vips_cast_uchar(t[12], &t[13], NULL))
		goto fail;
	x = t[13];
	// White everywhere; the mask alone carries the shape.
	if (vips_linear1(x, &t[14], 0, 255, "uchar", TRUE, NULL))
		goto fail;
	if (vips_bandjoin2(t[14], x, out, NULL))
		goto fail;
	(*out)->Type = VIPS_INTERPRETATION_B_W;
	g_object_unref(scope);
	return 0;
fail:
	g_object_unref(scope);
	return -1;
}

int mp_loop(VipsImage *in) {
	int v;
	if (vips_image_get_typeof(in, "loop") == 0 || vips_image_get_int(in, "loop", &v))
		return 0;
	return v;
}

int mp_delays(VipsImage *in, int **delays, int *n) {
	*delays = NULL;
	*n = 0;
	if (vips_image_get_typeof(in, "delay") == 0)
		return 0;
	return vips_image_get_array_int(in, "delay", delays, n);
}

const char *mp_loader(VipsImage *in) {
	const char *s = NULL;
	if (vips_image_get_typeof(in, VIPS_META_LOADER) == 0 || vips_image_get_string(in, VIPS_META_LOADER, &s))
		return "";
	return s;
}

int mp_has_icc(VipsImage *in) {
	return vips_image_get_typeof(in, VIPS_META_ICC_NAME) != 0;
}

// mp_to_srgb transforms an image with an embedded ICC profile to sRGB,
// 8 bits, so that browsers (which get no profile: savers strip them)
// show the colours the profile meant.
int mp_to_srgb(VipsImage *in, VipsImage **out) {
	return vips_icc_transform(in, out, "srgb", "embedded", TRUE, "depth", 8, NULL);
}

// mp_with_icc is a copy of an image with the ICC profile attached, as
// if its loader had found it embedded.
int mp_with_icc(VipsImage *in, const void *profile, size_t len, VipsImage **out) {
	if (vips_copy(in, out, NULL))
		return -1;
	vips_image_set_blob_copy(*out, VIPS_META_ICC_NAME, profile, len);
	return 0;
}

// mp_png_in_profile encodes an image as PNG with its pixels transformed
// to the named profile and that profile embedded (for fixtures).
int mp_png_in_profile(VipsImage *in, const char *profile, void **buf, size_t *len) {
	VipsImage *t;
	int r;
	if (vips_icc_transform(in, &t, profile, "input_profile", "srgb", "depth", 8, NULL))
		return -1;
	r = vips_pngsave_buffer(t, buf, len, "keep", VIPS_FOREIGN_KEEP_ICC, NULL);
	g_object_unref(t);
	return r;
}
