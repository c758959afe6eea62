#include <curl/curl.h>

/* curl_easy_setopt / curl_easy_getinfo are variadic, which Swift cannot call: typed wrappers. */
static inline CURLcode dg_curl_setopt_long(CURL *h, CURLoption o, long v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode dg_curl_setopt_ptr(CURL *h, CURLoption o, const void *v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode dg_curl_setopt_str(CURL *h, CURLoption o, const char *v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode dg_curl_setopt_off(CURL *h, CURLoption o, curl_off_t v) { return curl_easy_setopt(h, o, v); }
typedef size_t (*dg_curl_io_cb)(char *, size_t, size_t, void *);
static inline CURLcode dg_curl_setopt_iofunc(CURL *h, CURLoption o, dg_curl_io_cb f) { return curl_easy_setopt(h, o, f); }
static inline CURLcode dg_curl_getinfo_long(CURL *h, CURLINFO i, long *v) { return curl_easy_getinfo(h, i, v); }
static inline CURLcode dg_curl_getinfo_off(CURL *h, CURLINFO i, curl_off_t *v) { return curl_easy_getinfo(h, i, v); }
/* More typed wrappers (DogestryHTTP): progress and seek callbacks. */
typedef int (*dg_curl_xferinfo_cb)(void *, curl_off_t, curl_off_t, curl_off_t, curl_off_t);
static inline CURLcode dg_curl_setopt_xferinfo(CURL *h, dg_curl_xferinfo_cb f) { return curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, f); }
typedef int (*dg_curl_seek_cb)(void *, curl_off_t, int);
static inline CURLcode dg_curl_setopt_seek(CURL *h, dg_curl_seek_cb f) { return curl_easy_setopt(h, CURLOPT_SEEKFUNCTION, f); }
