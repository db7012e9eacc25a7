
/*
 * Conclave directory client: vCards and avatars from the directory
 * (XEP-0054 vcard-temp, XEP-0153 avatar hashes).
 *
 * Each vCard field comes from one configurable attribute; the defaults
 * are OpenLDAP's inetOrgPerson (RFC 2798; ORGUNIT from departmentNumber),
 * and an AD maps ORGNAME to "company", ORGUNIT to "department" and PHOTO
 * to "thumbnailPhoto".  The
 * values are taken as the directory has them but only when they can go
 * into XML as they are: valid UTF-8 without control characters, at most
 * CDIR_VC_VALUE_MAX bytes.  A photo is served only when it is an image
 * we can name (JPEG, PNG, GIF, WebP by their magic numbers) and at most
 * photo_max bytes: a garbage jpegPhoto is left out, never passed on
 * with a made-up type.  The avatar hash (XEP-0153 section 4.1: SHA-1 of
 * the image data) is computed from exactly the photo the vCard serves.
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/sha.h>

#include "cdir_int.h"


const char  *cdir_vcard_names[CDIR_VC_N] = {
    "FN", "GIVEN", "FAMILY", "NICKNAME", "TITLE", "ORGNAME", "ORGUNIT",
    "EMAIL", "TEL", "PHOTO"
};

const char  *cdir_vcard_default[CDIR_VC_N] = {
    "displayName", "givenName", "sn", "", "title", "o", "departmentNumber",
    "mail", "telephoneNumber", "jpegPhoto"
};


typedef struct {
    cdir_t         *dir;
    cdir_vcard_t   *vc;
    int             disabled;
    int             nomem;
} cdir_vc_ctx_t;


static void cdir_vcard_entry(cdir_call_t *call, LDAP *ld, LDAPMessage *e,
    void *ctx);
static char *cdir_vcard_filter(cdir_t *d, const char *local);
static int cdir_vcard_text_ok(const unsigned char *p, size_t len);
static void cdir_sha1_hex(const unsigned char *p, size_t len, char *hex);


int
cdir_vcard_options(cdir_t *d, const cdir_config_t *cfg, char *err,
    size_t errlen)
{
    int          i;
    const char  *a;

    for (i = 0; i < CDIR_VC_N; i++) {
        a = cfg->vcard_attr[i] ? cfg->vcard_attr[i] : cdir_vcard_default[i];

        if (a[0] == '\0') {
            continue;
        }

        if (strspn(a, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                      "0123456789-;") != strlen(a))
        {
            cdir_err(err, errlen, "invalid vCard attribute \"%s\"", a);
            return -1;
        }

        d->vcard_attr[i] = strdup(a);
        if (d->vcard_attr[i] == NULL) {
            cdir_err(err, errlen, "out of memory");
            return -1;
        }
    }

    d->photo_max = cfg->photo_max ? cfg->photo_max : CDIR_PHOTO_MAX;

    return 0;
}


void
cdir_vcard_options_free(cdir_t *d)
{
    int  i;

    for (i = 0; i < CDIR_VC_N; i++) {
        free(d->vcard_attr[i]);
    }
}


int
cdir_vcard(cdir_t *d, const char *dn, const char *local, cdir_vcard_t *vc,
    char *err, size_t errlen)
{
    int                  rc, i, n;
    char                *attrs[CDIR_VC_N + 2];
    cdir_call_t          call;
    cdir_search_t        s;
    cdir_vc_ctx_t        ctx;
    cdir_sigpipe_t       sp;
    cdir_auth_result_t   res;
    struct timespec      now;
    long long            ns;

    memset(vc, 0, sizeof(cdir_vcard_t));
    memset(&s, 0, sizeof(cdir_search_t));
    memset(&ctx, 0, sizeof(cdir_vc_ctx_t));

    if ((dn == NULL || dn[0] == '\0')
        && (local == NULL || local[0] == '\0'
            || strlen(local) > CDIR_MAX_LOGIN))
    {
        return 0;
    }

    if (dn != NULL && dn[0] != '\0') {
        s.base = dn;
        s.scope = LDAP_SCOPE_BASE;
        s.filter = strdup(d->reval_filter);

    } else {
        s.base = d->base;
        s.scope = LDAP_SCOPE_SUBTREE;
        s.filter = cdir_vcard_filter(d, local);
    }

    if (s.filter == NULL) {
        cdir_err(err, errlen, "out of memory");
        return -1;
    }

    for (i = 0, n = 0; i < CDIR_VC_N; i++) {
        if (d->vcard_attr[i] != NULL) {
            attrs[n++] = d->vcard_attr[i];
        }
    }

    attrs[n++] = "userAccountControl";
    attrs[n] = NULL;

    memset(&res, 0, sizeof(cdir_auth_result_t));
    memset(&call, 0, sizeof(cdir_call_t));
    call.dir = d;
    call.res = &res;

    (void) clock_gettime(CLOCK_MONOTONIC, &now);
    ns = now.tv_nsec + 2LL * d->timeout_ms * 1000000;
    call.deadline.tv_sec = now.tv_sec + ns / 1000000000;
    call.deadline.tv_nsec = ns % 1000000000;

    ctx.dir = d;
    ctx.vc = vc;

    s.attrs = attrs;
    s.sizelimit = 2;              /* enough to see an ambiguous name */
    s.first_only = 1;
    s.entry = cdir_vcard_entry;
    s.ctx = &ctx;

    cdir_sigpipe_block(&sp);
    rc = cdir_search(&call, &s);
    cdir_sigpipe_restore(&sp);

    free((char *) s.filter);

    if (rc == LDAP_SUCCESS && s.code != LDAP_SUCCESS
        && s.code != LDAP_SIZELIMIT_EXCEEDED
        && s.code != LDAP_NO_SUCH_OBJECT)
    {
        rc = s.code;
    }

    if (rc != LDAP_SUCCESS || ctx.nomem) {
        cdir_unavailable(&call, ctx.nomem ? LDAP_NO_MEMORY : rc);
        cdir_err(err, errlen, "%s", res.reason);
        cdir_vcard_free(vc);
        return -1;
    }

    if (s.entries != 1 || ctx.disabled) {
        /* none, ambiguous, or disabled: nobody to describe */
        cdir_vcard_free(vc);
        return 0;
    }

    return 1;
}


void
cdir_vcard_free(cdir_vcard_t *vc)
{
    int  i;

    for (i = 0; i < CDIR_VC_PHOTO; i++) {
        free(vc->value[i]);
        vc->value[i] = NULL;
    }

    free(vc->photo);
    vc->photo = NULL;
    vc->photo_len = 0;
}


/* "(&<user filter with *>(|(attr=local)(attr=local@*)))" */

static char *
cdir_vcard_filter(cdir_t *d, const char *local)
{
    char    *filter, esc[CDIR_MAX_LOGIN * 3 + 1];
    size_t   n, size;

    if (d->name_attr == NULL) {
        return cdir_make_filter(d, local, strlen(local));
    }

    n = cdir_escape_filter(esc, sizeof(esc), local, strlen(local));
    if (n == (size_t) -1) {
        return NULL;
    }

    /* mail and userPrincipalName: the JID has the value up to its "@" */
    size = strlen(d->reval_filter) + 2 * strlen(d->name_attr) + 2 * n + 32;

    filter = malloc(size);
    if (filter == NULL) {
        return NULL;
    }

    (void) snprintf(filter, size, "(&%s(|(%s=%s)(%s=%s@*)))",
                    d->reval_filter, d->name_attr, esc, d->name_attr, esc);

    return filter;
}


static void
cdir_vcard_entry(cdir_call_t *call, LDAP *ld, LDAPMessage *e, void *data)
{
    int              i;
    cdir_t          *d;
    cdir_vcard_t    *vc;
    cdir_vc_ctx_t   *ctx;
    struct berval  **vals;

    ctx = data;
    d = ctx->dir;
    vc = ctx->vc;

    vals = ldap_get_values_len(ld, e, "userAccountControl");
    if (vals != NULL) {
        if (vals[0] != NULL && vals[0]->bv_len < 16
            && (strtoul(vals[0]->bv_val, NULL, 10) & 0x2))
        {
            ctx->disabled = 1;
        }

        ldap_value_free_len(vals);
    }

    for (i = 0; i < CDIR_VC_PHOTO; i++) {
        if (d->vcard_attr[i] == NULL) {
            continue;
        }

        vals = ldap_get_values_len(ld, e, d->vcard_attr[i]);
        if (vals == NULL) {
            continue;
        }

        if (vals[0] != NULL && vals[0]->bv_len > 0
            && vals[0]->bv_len <= CDIR_VC_VALUE_MAX
            && cdir_vcard_text_ok((unsigned char *) vals[0]->bv_val,
                                  vals[0]->bv_len))
        {
            vc->value[i] = strndup(vals[0]->bv_val, vals[0]->bv_len);
            if (vc->value[i] == NULL) {
                ctx->nomem = 1;
            }
        }

        ldap_value_free_len(vals);
    }

    if (d->vcard_attr[CDIR_VC_PHOTO] == NULL) {
        return;
    }

    vals = ldap_get_values_len(ld, e, d->vcard_attr[CDIR_VC_PHOTO]);
    if (vals == NULL) {
        return;
    }

    if (vals[0] == NULL || vals[0]->bv_len == 0) {
        /* nothing */

    } else if (vals[0]->bv_len > d->photo_max) {
        vc->photo_dropped = vals[0]->bv_len;
        vc->photo_why = "larger than the photo limit";

    } else if ((vc->photo_type = cdir_photo_type(
                    (unsigned char *) vals[0]->bv_val, vals[0]->bv_len))
               == NULL)
    {
        vc->photo_dropped = vals[0]->bv_len;
        vc->photo_why = "not an image of a known type";

    } else {
        vc->photo = malloc(vals[0]->bv_len);

        if (vc->photo == NULL) {
            ctx->nomem = 1;

        } else {
            memcpy(vc->photo, vals[0]->bv_val, vals[0]->bv_len);
            vc->photo_len = vals[0]->bv_len;
            cdir_sha1_hex(vc->photo, vc->photo_len, vc->photo_hash);
        }
    }

    ldap_value_free_len(vals);
}


/* at sign-in: the hash of the photo the vCard would serve, or "" */

void
cdir_photo_hash(cdir_t *d, LDAP *ld, LDAPMessage *e, char *hash)
{
    struct berval  **vals;

    hash[0] = '\0';

    if (d->vcard_attr[CDIR_VC_PHOTO] == NULL) {
        return;
    }

    vals = ldap_get_values_len(ld, e, d->vcard_attr[CDIR_VC_PHOTO]);
    if (vals == NULL) {
        return;
    }

    if (vals[0] != NULL && vals[0]->bv_len > 0
        && vals[0]->bv_len <= d->photo_max
        && cdir_photo_type((unsigned char *) vals[0]->bv_val,
                           vals[0]->bv_len)
           != NULL)
    {
        cdir_sha1_hex((unsigned char *) vals[0]->bv_val, vals[0]->bv_len,
                      hash);
    }

    ldap_value_free_len(vals);
}


const char *
cdir_photo_type(const unsigned char *p, size_t len)
{
    if (len >= 3 && p[0] == 0xff && p[1] == 0xd8 && p[2] == 0xff) {
        return "image/jpeg";
    }

    if (len >= 8 && memcmp(p, "\x89PNG\r\n\x1a\n", 8) == 0) {
        return "image/png";
    }

    if (len >= 6
        && (memcmp(p, "GIF87a", 6) == 0 || memcmp(p, "GIF89a", 6) == 0))
    {
        return "image/gif";
    }

    if (len >= 12 && memcmp(p, "RIFF", 4) == 0
        && memcmp(p + 8, "WEBP", 4) == 0)
    {
        return "image/webp";
    }

    return NULL;
}


/*
 * XML 1.0 section 2.2 characters only: well-formed UTF-8 (no overlong
 * forms, no surrogates), no C0 controls other than tab, CR and LF.
 */

static int
cdir_vcard_text_ok(const unsigned char *p, size_t len)
{
    size_t    i, n;
    unsigned  c;

    for (i = 0; i < len; i += n) {
        c = p[i];

        if (c < 0x80) {
            if (c < 0x20 && c != '\t' && c != '\n' && c != '\r') {
                return 0;
            }

            n = 1;
            continue;
        }

        if (c >= 0xc2 && c <= 0xdf) {
            n = 2;

        } else if (c >= 0xe0 && c <= 0xef) {
            n = 3;

        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 4;

        } else {
            return 0;
        }

        if (i + n > len) {
            return 0;
        }

        if ((p[i + 1] & 0xc0) != 0x80
            || (n > 2 && (p[i + 2] & 0xc0) != 0x80)
            || (n > 3 && (p[i + 3] & 0xc0) != 0x80)
            || (c == 0xe0 && p[i + 1] < 0xa0)
            || (c == 0xed && p[i + 1] >= 0xa0)
            || (c == 0xf0 && p[i + 1] < 0x90)
            || (c == 0xf4 && p[i + 1] >= 0x90))
        {
            return 0;
        }
    }

    return 1;
}


static void
cdir_sha1_hex(const unsigned char *p, size_t len, char *hex)
{
    int            i;
    unsigned char  md[SHA_DIGEST_LENGTH];

    (void) SHA1(p, len, md);

    for (i = 0; i < SHA_DIGEST_LENGTH; i++) {
        (void) snprintf(hex + 2 * i, 3, "%02x", md[i]);
    }
}
