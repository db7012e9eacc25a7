
/*
 * Conclave directory client: the verified-credentials cache.
 *
 * When the directory cannot be reached and the outage policy allows it,
 * a sign-in is accepted if the same login succeeded with the same
 * password within the last cache_ttl seconds.  The cache holds, per
 * login, a random 16-byte salt and SHA-256(salt || password), never the
 * password; it lives in this process's memory only (nothing is written
 * to disk, and the entries are wiped when dropped).  A definite refusal
 * by the directory (wrong password, disabled, out of the group) drops
 * the entry at once, so a changed password stops the old one at the
 * next sign-in that reaches the directory.
 *
 * A mutex-protected chained hash table with a fixed bucket count; when
 * full, expired entries are evicted first, then the oldest of a bucket.
 */


#ifndef _GNU_SOURCE
#define _GNU_SOURCE             /* explicit_bzero() */
#endif

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <stdlib.h>
#include <string.h>

#include "cdir_int.h"


typedef struct cdir_centry_s  cdir_centry_t;

struct cdir_centry_s {
    cdir_centry_t        *next;
    time_t                expires;       /* CLOCK_MONOTONIC seconds */
    unsigned              roles;
    size_t                login_len;
    char                  login[CDIR_MAX_LOGIN];
    unsigned char         salt[16];
    unsigned char         hash[SHA256_DIGEST_LENGTH];
    char                  dn[CDIR_MAX_DN + 1];
    char                  name[CDIR_MAX_LOGIN + 1];
    char                  photo_hash[41];
};


struct cdir_cache_s {
    pthread_mutex_t       lock;
    cdir_centry_t       **bucket;
    size_t                nbuckets;
    size_t                count;
    size_t                max;
    int                   ttl;
};


static size_t cdir_cache_hash(const char *login, size_t len);
static cdir_centry_t **cdir_cache_find(cdir_cache_t *c, const char *login,
    size_t len);
static int cdir_cache_digest(const unsigned char *salt, const char *pw,
    size_t pw_len, unsigned char *out);
static void cdir_cache_evict(cdir_cache_t *c, size_t b, time_t now);
static time_t cdir_cache_now(void);


cdir_cache_t *
cdir_cache_create(int ttl, int size)
{
    cdir_cache_t  *c;

    c = calloc(1, sizeof(cdir_cache_t));
    if (c == NULL) {
        return NULL;
    }

    c->nbuckets = (size_t) size / 4 + 1;
    c->max = (size_t) size;
    c->ttl = ttl;

    c->bucket = calloc(c->nbuckets, sizeof(cdir_centry_t *));
    if (c->bucket == NULL) {
        free(c);
        return NULL;
    }

    if (pthread_mutex_init(&c->lock, NULL) != 0) {
        free(c->bucket);
        free(c);
        return NULL;
    }

    return c;
}


void
cdir_cache_destroy(cdir_cache_t *c)
{
    size_t          i;
    cdir_centry_t  *e, *next;

    for (i = 0; i < c->nbuckets; i++) {
        for (e = c->bucket[i]; e != NULL; e = next) {
            next = e->next;
            explicit_bzero(e, sizeof(cdir_centry_t));
            free(e);
        }
    }

    (void) pthread_mutex_destroy(&c->lock);
    free(c->bucket);
    free(c);
}


void
cdir_cache_put(cdir_cache_t *c, const char *login, size_t login_len,
    const char *pw, size_t pw_len, const cdir_auth_result_t *res)
{
    time_t          now;
    size_t          b;
    cdir_centry_t  *e, **pe;

    if (login_len > CDIR_MAX_LOGIN) {
        return;
    }

    now = cdir_cache_now();
    b = cdir_cache_hash(login, login_len) % c->nbuckets;

    (void) pthread_mutex_lock(&c->lock);

    pe = cdir_cache_find(c, login, login_len);

    if (pe != NULL) {
        e = *pe;

    } else {
        if (c->count >= c->max) {
            cdir_cache_evict(c, b, now);
        }

        e = (c->count < c->max) ? calloc(1, sizeof(cdir_centry_t)) : NULL;
        if (e == NULL) {
            (void) pthread_mutex_unlock(&c->lock);
            return;
        }

        e->next = c->bucket[b];
        c->bucket[b] = e;
        c->count++;

        memcpy(e->login, login, login_len);
        e->login_len = login_len;
    }

    /* no salt or no digest, no entry: an unsalted hash is not kept */
    if (RAND_bytes(e->salt, sizeof(e->salt)) != 1
        || cdir_cache_digest(e->salt, pw, pw_len, e->hash) != 0)
    {
        e->expires = 0;
        (void) pthread_mutex_unlock(&c->lock);
        return;
    }

    e->expires = now + c->ttl;
    e->roles = res->roles;
    strcpy(e->dn, res->dn);
    strcpy(e->name, res->name);
    strcpy(e->photo_hash, res->photo_hash);

    (void) pthread_mutex_unlock(&c->lock);
}


/* 0 and res filled when login/pw match a live entry, else -1 */

int
cdir_cache_get(cdir_cache_t *c, const char *login, size_t login_len,
    const char *pw, size_t pw_len, cdir_auth_result_t *res)
{
    int              rc;
    cdir_centry_t   *e, **pe;
    unsigned char    hash[SHA256_DIGEST_LENGTH];

    rc = -1;

    (void) pthread_mutex_lock(&c->lock);

    pe = cdir_cache_find(c, login, login_len);

    if (pe != NULL && (*pe)->expires > cdir_cache_now()) {
        e = *pe;

        if (cdir_cache_digest(e->salt, pw, pw_len, hash) == 0
            && CRYPTO_memcmp(hash, e->hash, sizeof(hash)) == 0)
        {
            res->status = CDIR_OK;
            res->roles = e->roles;
            res->from_cache = 1;
            res->stage = "cache";
            strcpy(res->dn, e->dn);
            strcpy(res->name, e->name);
            strcpy(res->photo_hash, e->photo_hash);
            rc = 0;
        }

        explicit_bzero(hash, sizeof(hash));
    }

    (void) pthread_mutex_unlock(&c->lock);

    return rc;
}


void
cdir_cache_drop(cdir_cache_t *c, const char *login, size_t login_len)
{
    cdir_centry_t  *e, **pe;

    (void) pthread_mutex_lock(&c->lock);

    pe = cdir_cache_find(c, login, login_len);

    if (pe != NULL) {
        e = *pe;
        *pe = e->next;
        c->count--;
        explicit_bzero(e, sizeof(cdir_centry_t));
        free(e);
    }

    (void) pthread_mutex_unlock(&c->lock);
}


/*
 * For the unit test (tests/unit/cdir_test.c): a copy of what an entry
 * keeps of the password, its salt and digest; 0, or -1 if none.
 */
int
cdir_cache_peek(cdir_cache_t *c, const char *login, size_t login_len,
    unsigned char *salt, unsigned char *hash)
{
    int              rc;
    cdir_centry_t  **pe;

    rc = -1;

    (void) pthread_mutex_lock(&c->lock);

    pe = cdir_cache_find(c, login, login_len);

    if (pe != NULL) {
        memcpy(salt, (*pe)->salt, sizeof((*pe)->salt));
        memcpy(hash, (*pe)->hash, sizeof((*pe)->hash));
        rc = 0;
    }

    (void) pthread_mutex_unlock(&c->lock);

    return rc;
}


unsigned long
cdir_cache_count(cdir_cache_t *c)
{
    unsigned long  n;

    (void) pthread_mutex_lock(&c->lock);
    n = c->count;
    (void) pthread_mutex_unlock(&c->lock);

    return n;
}


static cdir_centry_t **
cdir_cache_find(cdir_cache_t *c, const char *login, size_t len)
{
    cdir_centry_t  **pe;

    pe = &c->bucket[cdir_cache_hash(login, len) % c->nbuckets];

    for ( /* void */ ; *pe != NULL; pe = &(*pe)->next) {
        if ((*pe)->login_len == len && memcmp((*pe)->login, login, len) == 0)
        {
            return pe;
        }
    }

    return NULL;
}


/* frees expired entries everywhere, or else the oldest in bucket b */

static void
cdir_cache_evict(cdir_cache_t *c, size_t b, time_t now)
{
    size_t           i;
    cdir_centry_t   *e, **pe, **oldest;

    for (i = 0; i < c->nbuckets; i++) {
        for (pe = &c->bucket[i]; *pe != NULL; /* void */ ) {
            e = *pe;

            if (e->expires > now) {
                pe = &e->next;
                continue;
            }

            *pe = e->next;
            c->count--;
            explicit_bzero(e, sizeof(cdir_centry_t));
            free(e);
        }
    }

    if (c->count < c->max) {
        return;
    }

    oldest = NULL;

    for (pe = &c->bucket[b]; *pe != NULL; pe = &(*pe)->next) {
        if (oldest == NULL || (*pe)->expires < (*oldest)->expires) {
            oldest = pe;
        }
    }

    if (oldest != NULL) {
        e = *oldest;
        *oldest = e->next;
        c->count--;
        explicit_bzero(e, sizeof(cdir_centry_t));
        free(e);
    }
}


static int
cdir_cache_digest(const unsigned char *salt, const char *pw, size_t pw_len,
    unsigned char *out)
{
    int            rc;
    unsigned char  buf[16 + CDIR_MAX_PASSWORD];

    if (pw_len > CDIR_MAX_PASSWORD) {
        pw_len = CDIR_MAX_PASSWORD;     /* cdir_check_input() refused it */
    }

    memcpy(buf, salt, 16);
    memcpy(buf + 16, pw, pw_len);

    rc = EVP_Digest(buf, 16 + pw_len, out, NULL, EVP_sha256(), NULL);

    explicit_bzero(buf, sizeof(buf));

    return rc == 1 ? 0 : -1;
}


static size_t
cdir_cache_hash(const char *login, size_t len)
{
    size_t  h, i;

    h = 2166136261u;

    for (i = 0; i < len; i++) {
        h ^= (unsigned char) login[i];
        h *= 16777619u;
    }

    return h;
}


static time_t
cdir_cache_now(void)
{
    struct timespec  ts;

    (void) clock_gettime(CLOCK_MONOTONIC, &ts);

    return ts.tv_sec;
}
