
/*
 * Failed sign-ins counted in shared memory, for lockouts that every
 * worker sees and a reload keeps: the console's per login and per
 * address (ngx_xmpp_admin_auth.c), XMPP's per client address (below).
 *
 * A table is an open-addressed array of slots keyed by a CRC32 of the
 * kind and the name; a lookup probes 16 neighbours.  A slot whose
 * window has passed and whose lockout has ended is free to take, and a
 * full neighbourhood gives up its home slot, so a flood of names evicts
 * old counts instead of failing.  The caller's slab pool's mutex guards
 * the table.
 *
 * XMPP (conclave_max_address_failures, conclave_address_lockout): the
 * directory's refusals (<not-authorized/>) are counted per client
 * address, an IPv6 address by its /64 (one host holds a whole /64).
 * After conclave_max_address_failures of them within
 * conclave_address_lockout, sign-ins from that address are refused for
 * conclave_address_lockout without asking the directory.  A success
 * does not clear the count: an attacker with one valid account could
 * otherwise reset it between guesses.
 *
 * XMPP per account (conclave_max_account_failures, off by default,
 * conclave_account_lockout): the same refusals counted per login, in
 * the same table, so that guesses spread over many addresses stop
 * before the directory's own lockout locks the employee out of every
 * system.  A success clears this count, as a directory's bad-password
 * count is cleared, so the two stay in step; the attacker, who does
 * not know the password, cannot reset it.
 */


#include "ngx_xmpp.h"


#define NGX_XMPP_FAIL_PROBES       16
#define NGX_XMPP_AUTH_FAIL_SLOTS   8192
#define NGX_XMPP_AUTH_ZONE_SIZE    (512 * 1024)


static ngx_int_t ngx_xmpp_auth_zone_init(ngx_shm_zone_t *zone, void *data);


uint32_t
ngx_xmpp_fail_key(const char *kind, u_char *s, size_t len)
{
    uint32_t  crc;

    ngx_crc32_init(crc);
    ngx_crc32_update(&crc, (u_char *) kind, 2);
    ngx_crc32_update(&crc, s, len);
    ngx_crc32_final(crc);

    return crc ? crc : 1;
}


/* the slot of key, or a free or stale one to take over, or NULL */
static ngx_xmpp_fail_t *
ngx_xmpp_fail_slot_locked(ngx_xmpp_fail_t *tab, ngx_uint_t n, uint32_t key,
    time_t now, time_t window, ngx_uint_t create)
{
    ngx_uint_t        i, k;
    ngx_xmpp_fail_t  *f, *spare;

    spare = NULL;

    for (k = 0; k < NGX_XMPP_FAIL_PROBES; k++) {
        i = (key + k) % n;
        f = &tab[i];

        if (f->key == key) {
            return f;
        }

        if (spare == NULL
            && (f->key == 0
                || (now - f->first > window && now >= f->until)))
        {
            spare = f;
        }
    }

    if (!create) {
        return NULL;
    }

    if (spare == NULL) {
        /* a full neighbourhood: the oldest window gives way */
        spare = &tab[key % n];
    }

    spare->key = key;
    spare->failures = 0;
    spare->first = now;
    spare->until = 0;

    return spare;
}


/* the seconds of lockout left for key, 0 if none */
time_t
ngx_xmpp_fail_locked(ngx_slab_pool_t *shpool, ngx_xmpp_fail_t *tab,
    ngx_uint_t n, uint32_t key, time_t window)
{
    time_t      left;
    ngx_uint_t  failures;

    ngx_xmpp_fail_peek(shpool, tab, n, key, window, 0, &failures, &left);

    return left;
}


ngx_uint_t
ngx_xmpp_fail_count(ngx_slab_pool_t *shpool, ngx_xmpp_fail_t *tab,
    ngx_uint_t n, uint32_t key, ngx_uint_t failed, time_t window,
    ngx_uint_t max)
{
    time_t            now;
    ngx_uint_t        locked;
    ngx_xmpp_fail_t  *f;

    now = ngx_time();
    locked = 0;

    ngx_shmtx_lock(&shpool->mutex);

    f = ngx_xmpp_fail_slot_locked(tab, n, key, now, window, failed);
    if (f && !failed) {
        f->key = 0;

    } else if (f) {
        if (now - f->first > window) {
            f->first = now;
            f->failures = 0;
        }

        if (++f->failures >= max && f->until <= now) {
            f->until = now + window;
            locked = f->failures;
        }
    }

    ngx_shmtx_unlock(&shpool->mutex);

    return locked;
}


/*
 * What one key holds: its refusals within the window and the seconds
 * of lockout left; clear: forget them, as a success does (the
 * console's unlock).
 */
void
ngx_xmpp_fail_peek(ngx_slab_pool_t *shpool, ngx_xmpp_fail_t *tab,
    ngx_uint_t n, uint32_t key, time_t window, ngx_uint_t clear,
    ngx_uint_t *failures, time_t *left)
{
    time_t            now;
    ngx_xmpp_fail_t  *f;

    now = ngx_time();
    *failures = 0;
    *left = 0;

    ngx_shmtx_lock(&shpool->mutex);

    f = ngx_xmpp_fail_slot_locked(tab, n, key, now, window, 0);

    if (f) {
        if (now - f->first <= window || f->until > now) {
            *failures = f->failures;
        }

        if (f->until > now) {
            *left = f->until - now;
        }

        if (clear) {
            f->key = 0;
        }
    }

    ngx_shmtx_unlock(&shpool->mutex);
}


/* ------------------------------------------------------------------ */
/* XMPP sign-ins: per client address */


ngx_int_t
ngx_xmpp_auth_zone_add(ngx_conf_t *cf, ngx_xmpp_conf_t *xcf)
{
    ngx_str_t        name = ngx_string("conclave_auth_failures");
    ngx_shm_zone_t  *zone;

    if (xcf->max_address_failures == 0 && xcf->max_account_failures == 0) {
        return NGX_OK;
    }

    zone = ngx_shared_memory_add(cf, &name, NGX_XMPP_AUTH_ZONE_SIZE,
                                 &ngx_http_conclave_module);
    if (zone == NULL) {
        return NGX_ERROR;
    }

    zone->init = ngx_xmpp_auth_zone_init;
    xcf->auth_fail_zone = zone;

    return NGX_OK;
}


/* a reload keeps the counts: a lockout survives "nginx -s reload" */
static ngx_int_t
ngx_xmpp_auth_zone_init(ngx_shm_zone_t *zone, void *data)
{
    ngx_slab_pool_t  *shpool;
    ngx_xmpp_fail_t  *tab;

    if (data) {
        zone->data = data;
        return NGX_OK;
    }

    shpool = (ngx_slab_pool_t *) zone->shm.addr;

    if (zone->shm.exists) {
        zone->data = shpool->data;
        return NGX_OK;
    }

    tab = ngx_slab_calloc(shpool,
                          NGX_XMPP_AUTH_FAIL_SLOTS * sizeof(ngx_xmpp_fail_t));
    if (tab == NULL) {
        return NGX_ERROR;
    }

    shpool->data = tab;
    zone->data = tab;

    return NGX_OK;
}


/*
 * The key of a client address: an IPv6 one by its /64, and an IPv4
 * client of a dual-stack listener (::ffff:192.0.2.7) by its IPv4
 * address, or every IPv4 client would share the /64 ::ffff:0:0.
 */
static uint32_t
ngx_xmpp_auth_fail_key(ngx_str_t *addr)
{
    size_t  len;
    u_char  a6[16], text[NGX_INET_ADDRSTRLEN];

    if (ngx_strlchr(addr->data, addr->data + addr->len, ':') != NULL
        && ngx_inet6_addr(addr->data, addr->len, a6) == NGX_OK)
    {
        if (!IN6_IS_ADDR_V4MAPPED((struct in6_addr *) a6)) {
            return ngx_xmpp_fail_key("6:", a6, 8);
        }

        len = ngx_inet_ntop(AF_INET, a6 + 12, text, NGX_INET_ADDRSTRLEN);

        return ngx_xmpp_fail_key("i:", text, len);
    }

    return ngx_xmpp_fail_key("i:", addr->data, addr->len);
}


/* a lockout of the XMPP table: max 0 is off */
static time_t
ngx_xmpp_auth_left(ngx_xmpp_conf_t *xcf, uint32_t key, ngx_msec_t window,
    ngx_uint_t max)
{
    ngx_shm_zone_t  *zone;

    zone = xcf->auth_fail_zone;

    if (zone == NULL || max == 0) {
        return 0;
    }

    return ngx_xmpp_fail_locked((ngx_slab_pool_t *) zone->shm.addr,
                                zone->data, NGX_XMPP_AUTH_FAIL_SLOTS, key,
                                window / 1000);
}


static ngx_uint_t
ngx_xmpp_auth_count(ngx_xmpp_conf_t *xcf, uint32_t key, ngx_uint_t failed,
    ngx_msec_t window, ngx_uint_t max)
{
    ngx_shm_zone_t  *zone;

    zone = xcf->auth_fail_zone;

    if (zone == NULL || max == 0) {
        return 0;
    }

    return ngx_xmpp_fail_count((ngx_slab_pool_t *) zone->shm.addr,
                               zone->data, NGX_XMPP_AUTH_FAIL_SLOTS, key,
                               failed, window / 1000, max);
}


time_t
ngx_xmpp_auth_locked(ngx_xmpp_conf_t *xcf, ngx_str_t *addr)
{
    return ngx_xmpp_auth_left(xcf, ngx_xmpp_auth_fail_key(addr),
                              xcf->address_lockout,
                              xcf->max_address_failures);
}


ngx_uint_t
ngx_xmpp_auth_failed(ngx_xmpp_conf_t *xcf, ngx_str_t *addr)
{
    return ngx_xmpp_auth_count(xcf, ngx_xmpp_auth_fail_key(addr), 1,
                               xcf->address_lockout,
                               xcf->max_address_failures);
}


/* per account: the login as the client gave it, in lower case */
time_t
ngx_xmpp_auth_account_locked(ngx_xmpp_conf_t *xcf, ngx_str_t *user)
{
    return ngx_xmpp_auth_left(xcf,
                              ngx_xmpp_fail_key("u:", user->data, user->len),
                              xcf->account_lockout,
                              xcf->max_account_failures);
}


/* failed: one more refusal; else a success, which clears the count */
ngx_uint_t
ngx_xmpp_auth_account_count(ngx_xmpp_conf_t *xcf, ngx_str_t *user,
    ngx_uint_t failed)
{
    return ngx_xmpp_auth_count(xcf,
                               ngx_xmpp_fail_key("u:", user->data, user->len),
                               failed, xcf->account_lockout,
                               xcf->max_account_failures);
}


/*
 * The console (POST /api/unlock): the count of a login (lower case) or
 * of a client address (as ngx_sock_ntop() writes it), and clear: end
 * it.  NGX_DECLINED: neither lockout is configured.
 */
ngx_int_t
ngx_xmpp_auth_unlock(ngx_xmpp_conf_t *xcf, ngx_str_t *login, ngx_str_t *addr,
    ngx_uint_t clear, ngx_uint_t *failures, time_t *left)
{
    uint32_t         key;
    ngx_msec_t       window;
    ngx_shm_zone_t  *zone;

    zone = xcf->auth_fail_zone;

    if (zone == NULL) {
        return NGX_DECLINED;
    }

    if (login) {
        key = ngx_xmpp_fail_key("u:", login->data, login->len);
        window = xcf->account_lockout;

    } else {
        key = ngx_xmpp_auth_fail_key(addr);
        window = xcf->address_lockout;
    }

    ngx_xmpp_fail_peek((ngx_slab_pool_t *) zone->shm.addr, zone->data,
                       NGX_XMPP_AUTH_FAIL_SLOTS, key, window / 1000, clear,
                       failures, left);

    return NGX_OK;
}
