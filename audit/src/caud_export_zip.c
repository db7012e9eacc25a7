
/*
 * The export's large members (records.jsonl, actiance_export.xml,
 * posts.csv, the chain's leaves) deflated while they are written, so
 * that the zip is not a second pass over a gigabyte of staged text
 * after the stream from MariaDB ends (docs/compliance.md "Performance").
 *
 * A writer gets a FILE * (fopencookie); its bytes go in chunks of
 * CAUD_XZ_CHUNK to one worker thread per export, which feeds each
 * member's SHA-256 (the manifest's), CRC-32 and raw deflate stream
 * (RFC 1951, zlib) and writes the deflated bytes to the stage under the
 * member's name.  The zip then takes them as they are: a libzip source
 * whose stat says "deflated, this size, this CRC" is copied, not
 * recompressed.  A stored export (--compress 0) stages the plain bytes
 * and only the digest comes from here.  The queue holds at most
 * CAUD_XZ_QUEUE chunks: a writer faster than the deflater waits.
 */


#define _GNU_SOURCE

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <zlib.h>

#include "caud_export_int.h"


#define CAUD_XZ_CHUNK   (1024 * 1024)
#define CAUD_XZ_QUEUE   8
#define CAUD_XZ_OUTBUF  (256 * 1024)


typedef struct caud_xzchunk_s  caud_xzchunk_t;

struct caud_xzchunk_s {
    caud_xzchunk_t   *next;
    caud_xout_t      *out;
    size_t            len;
    int               last;
    unsigned char     data[CAUD_XZ_CHUNK];
};


struct caud_xout_s {
    caud_xout_t      *next;
    caud_xz_t        *z;
    char              name[256];
    char              path[4200];
    FILE             *fp;           /* the writer's end */
    FILE             *zfp;          /* the staged member */
    FILE             *rfp;          /* the zip's read of it */
    caud_xzchunk_t   *cur;
    z_stream          zs;
    int               zinit;
    EVP_MD_CTX       *sha;
    uLong             crc;
    uint64_t          size;
    uint64_t          zsize;
    int               level;        /* deflate level; -1: stored */
    int               closed;       /* the writer is done */
    int               done;         /* so is the worker */
    int               failed;
    char              hex[65];
    zip_error_t       zerr;
};


struct caud_xz_s {
    pthread_t         tid;
    int               started;
    pthread_mutex_t   mu;
    pthread_cond_t    cv;           /* queue changed or a member done */
    caud_xzchunk_t   *head;
    caud_xzchunk_t   *tail;
    size_t            queued;
    int               stop;
    caud_xout_t      *outs;
    unsigned char     obuf[CAUD_XZ_OUTBUF];
};


/* ------------------------------------------------------------------ */
/* the worker */

static int
caud_xz_deflate(caud_xz_t *z, caud_xout_t *o, caud_xzchunk_t *c)
{
    int     rc;
    size_t  have;

    o->zs.next_in = c->data;
    o->zs.avail_in = (uInt) c->len;

    do {
        o->zs.next_out = z->obuf;
        o->zs.avail_out = sizeof(z->obuf);
        rc = deflate(&o->zs, c->last ? Z_FINISH : Z_NO_FLUSH);
        if (rc == Z_STREAM_ERROR) {
            return -1;
        }
        have = sizeof(z->obuf) - o->zs.avail_out;
        if (have && fwrite(z->obuf, 1, have, o->zfp) != have) {
            return -1;
        }
        o->zsize += have;
    } while (o->zs.avail_out == 0);

    return c->last && rc != Z_STREAM_END ? -1 : 0;
}


static int
caud_xz_finish(caud_xout_t *o)
{
    int            rc;
    size_t         i;
    unsigned char  md[EVP_MAX_MD_SIZE];
    unsigned int   mdlen;

    rc = EVP_DigestFinal_ex(o->sha, md, &mdlen) == 1 && mdlen == 32 ? 0 : -1;

    for (i = 0; rc == 0 && i < 32; i++) {
        snprintf(o->hex + 2 * i, 3, "%02x", md[i]);
    }

    if (fclose(o->zfp) != 0) {
        rc = -1;
    }

    o->zfp = NULL;

    return rc;
}


static void
caud_xz_chunk(caud_xz_t *z, caud_xzchunk_t *c)
{
    caud_xout_t  *o = c->out;

    if (!o->failed && c->len) {
        o->size += c->len;
        o->crc = crc32(o->crc, c->data, (uInt) c->len);

        if (EVP_DigestUpdate(o->sha, c->data, c->len) != 1) {
            o->failed = 1;
        }
    }

    if (!o->failed) {
        if (o->level < 0) {
            if (c->len && fwrite(c->data, 1, c->len, o->zfp) != c->len) {
                o->failed = 1;
            }
            o->zsize += c->len;

        } else if (caud_xz_deflate(z, o, c) != 0) {
            o->failed = 1;
        }
    }

    if (c->last) {
        if (!o->failed && caud_xz_finish(o) != 0) {
            o->failed = 1;
        }

        pthread_mutex_lock(&z->mu);
        o->done = 1;
        pthread_cond_broadcast(&z->cv);
        pthread_mutex_unlock(&z->mu);
    }

    free(c);
}


static void *
caud_xz_thread(void *data)
{
    caud_xz_t       *z = data;
    caud_xzchunk_t  *c;

    for ( ;; ) {
        pthread_mutex_lock(&z->mu);

        while (z->head == NULL && !z->stop) {
            pthread_cond_wait(&z->cv, &z->mu);
        }

        c = z->head;
        if (c == NULL) {
            pthread_mutex_unlock(&z->mu);
            return NULL;
        }

        z->head = c->next;
        if (z->head == NULL) {
            z->tail = NULL;
        }
        z->queued--;
        pthread_cond_broadcast(&z->cv);
        pthread_mutex_unlock(&z->mu);

        caud_xz_chunk(z, c);
    }
}


/* ------------------------------------------------------------------ */
/* the writer's end */

static void
caud_xz_queue(caud_xz_t *z, caud_xzchunk_t *c)
{
    pthread_mutex_lock(&z->mu);

    while (z->queued >= CAUD_XZ_QUEUE) {
        pthread_cond_wait(&z->cv, &z->mu);
    }

    c->next = NULL;
    if (z->tail) {
        z->tail->next = c;
    } else {
        z->head = c;
    }
    z->tail = c;
    z->queued++;

    pthread_cond_broadcast(&z->cv);
    pthread_mutex_unlock(&z->mu);
}


static ssize_t
caud_xout_write(void *cookie, const char *buf, size_t n)
{
    size_t        k, left;
    caud_xout_t  *o = cookie;

    for (left = n; left; left -= k, buf += k) {
        if (o->cur == NULL) {
            o->cur = malloc(sizeof(caud_xzchunk_t));
            if (o->cur == NULL) {
                errno = ENOMEM;
                return -1;
            }
            o->cur->out = o;
            o->cur->len = 0;
            o->cur->last = 0;
        }

        k = CAUD_XZ_CHUNK - o->cur->len;
        k = k < left ? k : left;
        memcpy(o->cur->data + o->cur->len, buf, k);
        o->cur->len += k;

        if (o->cur->len == CAUD_XZ_CHUNK) {
            caud_xz_queue(o->z, o->cur);
            o->cur = NULL;
        }
    }

    return (ssize_t) n;
}


/* fclose(): the last chunk, then wait for the worker to finish it */
static int
caud_xout_cookie_close(void *cookie)
{
    caud_xout_t  *o = cookie;

    if (o->cur == NULL) {
        o->cur = malloc(sizeof(caud_xzchunk_t));
        if (o->cur == NULL) {
            o->failed = 1;
            o->done = 1;
            o->closed = 1;
            errno = ENOMEM;
            return -1;
        }
        o->cur->out = o;
        o->cur->len = 0;
    }

    o->cur->last = 1;
    caud_xz_queue(o->z, o->cur);
    o->cur = NULL;
    o->closed = 1;

    pthread_mutex_lock(&o->z->mu);
    while (!o->done) {
        pthread_cond_wait(&o->z->cv, &o->z->mu);
    }
    pthread_mutex_unlock(&o->z->mu);

    if (o->failed) {
        errno = EIO;
        return -1;
    }

    return 0;
}


static caud_xz_t *
caud_xz_get(caud_export_t *x)
{
    caud_xz_t  *z;

    if (x->z) {
        return x->z;
    }

    z = calloc(1, sizeof(caud_xz_t));
    if (z == NULL) {
        return NULL;
    }

    pthread_mutex_init(&z->mu, NULL);
    pthread_cond_init(&z->cv, NULL);

    if (pthread_create(&z->tid, NULL, caud_xz_thread, z) != 0) {
        pthread_cond_destroy(&z->cv);
        pthread_mutex_destroy(&z->mu);
        free(z);
        return NULL;
    }

    z->started = 1;
    x->z = z;

    return z;
}


FILE *
caud_xout_open(caud_export_t *x, const char *name)
{
    caud_xz_t    *z;
    caud_xout_t  *o;
    cookie_io_functions_t  io = {
        NULL, caud_xout_write, NULL, caud_xout_cookie_close
    };

    z = caud_xz_get(x);
    o = z ? calloc(1, sizeof(caud_xout_t)) : NULL;
    if (o == NULL) {
        caud_xerr(x, "out of memory");
        return NULL;
    }

    o->z = z;
    o->level = x->o->level < 0 ? -1 : x->o->level > 0 ? x->o->level : 1;
    o->crc = crc32(0, Z_NULL, 0);
    snprintf(o->name, sizeof(o->name), "%s", name);
    zip_error_init(&o->zerr);

    /* on the list first: caud_xz_free() releases it whatever fails */
    o->next = z->outs;
    z->outs = o;
    o->closed = 1;
    o->done = 1;

    if ((size_t) snprintf(o->path, sizeof(o->path), "%s/%s", x->stage,
                          name) >= sizeof(o->path))
    {
        caud_xerr(x, "path too long: %s", name);
        return NULL;
    }

    o->sha = EVP_MD_CTX_new();
    if (o->sha == NULL || EVP_DigestInit_ex(o->sha, EVP_sha256(), NULL) != 1)
    {
        caud_xerr(x, "SHA-256 failed");
        return NULL;
    }

    /* raw deflate (negative window bits): what a zip member holds */
    if (o->level >= 0) {
        if (deflateInit2(&o->zs, o->level, Z_DEFLATED, -15, 8,
                         Z_DEFAULT_STRATEGY) != Z_OK)
        {
            caud_xerr(x, "deflate: out of memory");
            return NULL;
        }
        o->zinit = 1;
    }

    o->zfp = fopen(o->path, "w");
    if (o->zfp == NULL) {
        caud_xerr(x, "%s: %s", o->path, strerror(errno));
        return NULL;
    }

    o->fp = fopencookie(o, "w", io);
    if (o->fp == NULL) {
        caud_xerr(x, "%s: %s", o->path, strerror(errno));
        return NULL;
    }

    /* the writers' small writes are gathered by stdio first */
    setvbuf(o->fp, NULL, _IOFBF, 65536);
    o->closed = 0;
    o->done = 0;

    return o->fp;
}


caud_xout_t *
caud_xout_find(caud_export_t *x, const char *name)
{
    caud_xout_t  *o;

    for (o = x->z ? x->z->outs : NULL; o; o = o->next) {
        if (strcmp(o->name, name) == 0) {
            return o;
        }
    }

    return NULL;
}


/* the manifest's line: the member's SHA-256 and size, as written */
int
caud_xout_digest(caud_xout_t *o, char hex[65], uint64_t *size)
{
    if (!o->done || o->failed || o->hex[0] == '\0') {
        return -1;
    }

    memcpy(hex, o->hex, 65);
    *size = o->size;

    return 0;
}


/* ------------------------------------------------------------------ */
/* into the zip as they are */

static zip_int64_t
caud_xout_source_cb(void *ud, void *data, zip_uint64_t len,
    zip_source_cmd_t cmd)
{
    size_t        n;
    zip_stat_t   *st;
    caud_xout_t  *o = ud;

    switch (cmd) {

    case ZIP_SOURCE_OPEN:
        o->rfp = fopen(o->path, "rb");
        if (o->rfp == NULL) {
            zip_error_set(&o->zerr, ZIP_ER_OPEN, errno);
            return -1;
        }
        return 0;

    case ZIP_SOURCE_READ:
        n = fread(data, 1, len, o->rfp);
        if (n == 0 && ferror(o->rfp)) {
            zip_error_set(&o->zerr, ZIP_ER_READ, errno);
            return -1;
        }
        return (zip_int64_t) n;

    case ZIP_SOURCE_CLOSE:
        if (o->rfp) {
            fclose(o->rfp);
            o->rfp = NULL;
        }
        return 0;

    case ZIP_SOURCE_STAT:
        if (len < sizeof(zip_stat_t)) {
            zip_error_set(&o->zerr, ZIP_ER_INVAL, 0);
            return -1;
        }
        st = data;
        zip_stat_init(st);
        st->valid = ZIP_STAT_SIZE | ZIP_STAT_COMP_SIZE | ZIP_STAT_COMP_METHOD
                    | ZIP_STAT_CRC | ZIP_STAT_MTIME
                    | ZIP_STAT_ENCRYPTION_METHOD;
        st->size = o->size;
        st->comp_size = o->zsize;
        st->comp_method = ZIP_CM_DEFLATE;
        st->crc = (zip_uint32_t) o->crc;
        st->mtime = time(NULL);
        st->encryption_method = ZIP_EM_NONE;
        return sizeof(zip_stat_t);

    case ZIP_SOURCE_ERROR:
        return zip_error_to_data(&o->zerr, data, len);

    case ZIP_SOURCE_FREE:
        return 0;

    case ZIP_SOURCE_SUPPORTS:
        return zip_source_make_command_bitmap(ZIP_SOURCE_OPEN,
                   ZIP_SOURCE_READ, ZIP_SOURCE_CLOSE, ZIP_SOURCE_STAT,
                   ZIP_SOURCE_ERROR, ZIP_SOURCE_FREE, -1);

    default:
        zip_error_set(&o->zerr, ZIP_ER_OPNOTSUPP, 0);
        return -1;
    }
}


/* a deflated member's source, or NULL: stored, read the stage as is */
zip_source_t *
caud_xout_source(zip_t *za, caud_xout_t *o)
{
    if (o->level < 0) {
        return NULL;
    }

    return zip_source_function(za, caud_xout_source_cb, o);
}


/* close what is still open (an export that failed), stop the worker */
void
caud_xz_free(caud_export_t *x)
{
    caud_xz_t    *z;
    caud_xout_t  *o, *next;

    z = x->z;
    if (z == NULL) {
        return;
    }

    for (o = z->outs; o; o = o->next) {
        if (!o->closed && o->fp) {
            (void) fclose(o->fp);
        }
    }

    pthread_mutex_lock(&z->mu);
    z->stop = 1;
    pthread_cond_broadcast(&z->cv);
    pthread_mutex_unlock(&z->mu);

    if (z->started) {
        pthread_join(z->tid, NULL);
    }

    for (o = z->outs; o; o = next) {
        next = o->next;
        if (o->zinit) {
            deflateEnd(&o->zs);
        }
        if (o->zfp) {
            fclose(o->zfp);
        }
        if (o->rfp) {
            fclose(o->rfp);
        }
        free(o->cur);
        EVP_MD_CTX_free(o->sha);
        zip_error_fini(&o->zerr);
        free(o);
    }

    pthread_cond_destroy(&z->cv);
    pthread_mutex_destroy(&z->mu);
    free(z);
    x->z = NULL;
}
