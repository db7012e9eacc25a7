/*
 * How much heap OpenSSL itself keeps per idle server connection after
 * the handshake (issue 5: the idle TCP+TLS session target).  N
 * handshakes over socketpairs with the system libssl, the server side
 * configured as nginx configures it (SSL_MODE_RELEASE_BUFFERS, no
 * session cache), the client freed after each; the figure is the
 * malloc()ed bytes still held (mallinfo2), divided by N.  Measures,
 * asserts nothing.
 *
 * With "sites", OpenSSL's allocations go through counting functions
 * (CRYPTO_set_mem_functions) and the bytes each allocation site still
 * holds per connection are listed: where the floor comes from.
 *
 *   cc -O2 -o openssl_conn_mem openssl_conn_mem.c -lssl -lcrypto
 *   ./openssl_conn_mem [N] [sites]
 */

#include <fcntl.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>


static size_t
heap_used(void)
{
    struct mallinfo2  m = mallinfo2();

    return m.uordblks + m.hblkhd;
}


/* "sites": live OpenSSL allocations counted by file and line */

#define SITES  1024

typedef struct {
    size_t       size;
    const char  *file;     /* NULL: not counted */
    int          line;
    int          pad;
} alloc_hdr_t;

typedef struct {
    const char  *file;
    int          line;
    long long    bytes;
    long         n;
} site_t;

static site_t   sites[SITES];
static int      nsites, counting;


static site_t *
site(const char *file, int line)
{
    int  i;

    for (i = 0; i < nsites; i++) {
        if (sites[i].line == line && sites[i].file == file) {
            return &sites[i];
        }
    }

    if (nsites == SITES) {
        return &sites[0];
    }

    sites[nsites].file = file;
    sites[nsites].line = line;

    return &sites[nsites++];
}


static void *
count_malloc(size_t n, const char *file, int line)
{
    site_t       *st;
    alloc_hdr_t  *h;

    h = malloc(sizeof(alloc_hdr_t) + n);
    if (h == NULL) {
        return NULL;
    }

    h->size = n;
    h->file = counting ? file : NULL;
    h->line = line;

    if (counting) {
        st = site(file, line);
        st->bytes += n;
        st->n++;
    }

    return h + 1;
}


static void
count_free(void *p, const char *file, int line)
{
    site_t       *st;
    alloc_hdr_t  *h;

    (void) file;
    (void) line;

    if (p == NULL) {
        return;
    }

    h = (alloc_hdr_t *) p - 1;

    if (h->file) {
        st = site(h->file, h->line);
        st->bytes -= h->size;
        st->n--;
    }

    free(h);
}


static void *
count_realloc(void *p, size_t n, const char *file, int line)
{
    void         *q;
    alloc_hdr_t  *h;

    if (p == NULL) {
        return count_malloc(n, file, line);
    }

    h = (alloc_hdr_t *) p - 1;

    q = count_malloc(n, file, line);
    if (q) {
        memcpy(q, p, h->size < n ? h->size : n);
        count_free(p, file, line);
    }

    return q;
}


static int
by_bytes(const void *a, const void *b)
{
    long long  x = ((const site_t *) a)->bytes, y = ((const site_t *) b)->bytes;

    return x < y ? 1 : (x > y ? -1 : 0);
}


/* the sites still holding >= 16 bytes per connection */
static void
report_sites(int n)
{
    int  i;

    qsort(sites, nsites, sizeof(site_t), by_bytes);

    for (i = 0; i < nsites; i++) {
        if (sites[i].bytes >= 16LL * n) {
            printf("    %6.0f B in %4.1f blocks  %s:%d\n",
                   (double) sites[i].bytes / n, (double) sites[i].n / n,
                   sites[i].file, sites[i].line);
        }
    }
}


/* a throwaway self-signed RSA-2048 certificate, like the harness's */
static int
self_signed(SSL_CTX *ctx)
{
    X509      *x;
    EVP_PKEY  *k;

    k = EVP_RSA_gen(2048);
    x = X509_new();
    if (k == NULL || x == NULL) {
        return -1;
    }

    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, k);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                               (const unsigned char *) "example.com", -1,
                               -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(x));

    if (X509_sign(x, k, EVP_sha256()) == 0
        || SSL_CTX_use_certificate(ctx, x) != 1
        || SSL_CTX_use_PrivateKey(ctx, k) != 1)
    {
        return -1;
    }

    X509_free(x);
    EVP_PKEY_free(k);

    return 0;
}


static double
run(SSL_CTX *sctx, SSL_CTX *cctx, int n)
{
    int      i, k, sv[2];
    SSL     *s, *c, **keep;
    char     buf[16];
    size_t   u0, total;

    keep = calloc(n, sizeof(SSL *));
    if (keep == NULL) {
        return -1;
    }

    total = 0;

    for (i = 0; i < n; i++) {
        if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) {
            return -1;
        }

        fcntl(sv[0], F_SETFL, O_NONBLOCK);
        fcntl(sv[1], F_SETFL, O_NONBLOCK);

        u0 = heap_used();
        counting = 1;

        c = SSL_new(cctx);
        s = SSL_new(sctx);
        SSL_set_fd(c, sv[1]);
        SSL_set_fd(s, sv[0]);
        SSL_set_connect_state(c);
        SSL_set_accept_state(s);

        for (k = 0; k < 100; k++) {
            if (SSL_do_handshake(c) == 1 && SSL_do_handshake(s) == 1) {
                break;
            }
        }

        /* one application record each way, then idle */
        SSL_write(c, "x", 1);
        (void) SSL_read(s, buf, sizeof(buf));
        SSL_write(s, "y", 1);
        (void) SSL_read(c, buf, sizeof(buf));
        (void) SSL_read(s, buf, sizeof(buf));

        SSL_free(c);
        close(sv[1]);

        counting = 0;
        total += heap_used() - u0;
        keep[i] = s;
    }

    if (nsites) {
        report_sites(n);
    }

    for (i = 0; i < n; i++) {
        SSL_free(keep[i]);
    }

    nsites = 0;             /* every counted block is freed: start over */

    free(keep);

    return (double) total / n / 1024;
}


int
main(int argc, char **argv)
{
    int       n;
    SSL_CTX  *sctx, *cctx;

    n = argc > 1 ? atoi(argv[1]) : 1000;

    /* before OpenSSL's first allocation */
    if (argc > 2 && strcmp(argv[2], "sites") == 0
        && CRYPTO_set_mem_functions(count_malloc, count_realloc, count_free)
           != 1)
    {
        fprintf(stderr, "CRYPTO_set_mem_functions failed\n");
        return 1;
    }

    sctx = SSL_CTX_new(TLS_server_method());
    cctx = SSL_CTX_new(TLS_client_method());
    if (sctx == NULL || cctx == NULL || self_signed(sctx) != 0) {
        fprintf(stderr, "openssl set-up failed\n");
        return 1;
    }

    SSL_CTX_set_mode(sctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_session_cache_mode(sctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_min_proto_version(sctx, TLS1_2_VERSION);

    printf("%s, %d idle server connections:\n",
           OpenSSL_version(OPENSSL_VERSION), n);
    printf("  TLS 1.3: %.2f KiB of heap each\n", run(sctx, cctx, n));

    SSL_CTX_set_max_proto_version(cctx, TLS1_2_VERSION);
    printf("  TLS 1.2: %.2f KiB of heap each\n", run(sctx, cctx, n));

    SSL_CTX_free(sctx);
    SSL_CTX_free(cctx);

    return 0;
}
