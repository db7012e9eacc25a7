/*
 * How much heap OpenSSL itself keeps per idle server connection after
 * the handshake (issue 5: the idle TCP+TLS session target).  N
 * handshakes over socketpairs with the system libssl, the server side
 * configured as nginx configures it (SSL_MODE_RELEASE_BUFFERS, no
 * session cache), the client freed after each; the figure is the
 * malloc()ed bytes still held (mallinfo2), divided by N.  Measures,
 * asserts nothing.
 *
 *   cc -O2 -o openssl_conn_mem openssl_conn_mem.c -lssl -lcrypto
 *   ./openssl_conn_mem [N]
 */

#include <fcntl.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
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

        total += heap_used() - u0;
        keep[i] = s;
    }

    for (i = 0; i < n; i++) {
        SSL_free(keep[i]);
    }

    free(keep);

    return (double) total / n / 1024;
}


int
main(int argc, char **argv)
{
    int       n;
    SSL_CTX  *sctx, *cctx;

    n = argc > 1 ? atoi(argv[1]) : 1000;

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
