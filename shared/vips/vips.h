// Thin C wrappers around the variadic libvips calls cgo cannot make directly.
#include <stdlib.h>
#include <vips/vips.h>

int mp_start(int concurrency);
int mp_header(const void *buf, size_t len, int all_pages, VipsImage **out);
enum { MP_THUMBNAIL_ANY, MP_THUMBNAIL_FAST, MP_THUMBNAIL_LIBVIPS };
int mp_thumbnail_buffer(void *buf, size_t len, VipsImage **out, int width, int height, int enlarge, int all_pages, int fail_on, int path);
int mp_thumbnail_jpeg(void *buf, size_t len, VipsImage **out, int shrink, int width, int height, int fail_on);
int mp_thumbnail_image(VipsImage *in, VipsImage **out, int width, int height, int enlarge);
VipsImage *mp_from_rgba(const void *pix, size_t len, int width, int height);
VipsImage *mp_from_rgba_frames(const void *pix, size_t len, int width, int page_height, int pages, int *delays, int loop);
int mp_to_rgba(VipsImage *in, void **buf, size_t *len);
int mp_webpsave(VipsImage *in, void **buf, size_t *len, int quality, int alpha_quality, int effort, int smart_subsample);
int mp_pngsave(VipsImage *in, void **buf, size_t *len);
int mp_avifsave(VipsImage *in, void **buf, size_t *len);
int mp_load_first(const void *buf, size_t len, int fail_on, VipsImage **out);
int mp_entropy(VipsImage *in, double *entropy);
int mp_badge(VipsImage *in, VipsImage **out, int size, double contrast);
int mp_loop(VipsImage *in);
int mp_delays(VipsImage *in, int **delays, int *n);
const char *mp_loader(VipsImage *in);
int mp_has_icc(VipsImage *in);
int mp_to_srgb(VipsImage *in, VipsImage **out);
int mp_with_icc(VipsImage *in, const void *profile, size_t len, VipsImage **out);
int mp_png_in_profile(VipsImage *in, const char *profile, void **buf, size_t *len);
