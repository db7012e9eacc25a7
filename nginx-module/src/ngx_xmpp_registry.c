
/*
 * The session registry: every bound resource of every worker, in one
 * shared-memory zone, so that any worker can find the worker that owns
 * a JID.  Entries hold only ids (worker pid, session id), never
 * pointers into a worker, so a remote node can take the pid's place
 * when Conclave scales out (DESIGN.md).  The zone survives reloads:
 * old workers keep serving their sessions until those end.
 */


#include "ngx_xmpp.h"

#include <openssl/rand.h>
#include <jansson.h>


typedef struct {
    ngx_rbtree_t              rbtree;
    ngx_rbtree_node_t         sentinel;
    u_char                    secret[16];
    ngx_uint_t                count;
    ngx_uint_t                rooms;
    ngx_uint_t                carbons;   /* entries with bit 2 set */
} ngx_xmpp_registry_sh_t;


/*
 * A room's entry (ngx_xmpp_muc.c): its owner, in place of a session.
 * A value no combination of the session bits below can take.
 */
#define NGX_XMPP_REGISTRY_ROOM    0x80

/* bit 2 of a session's "available": XEP-0280 carbons enabled */
#define ngx_xmpp_registry_has_carbons(rn)                                  \
    ((rn)->available != NGX_XMPP_REGISTRY_ROOM && ((rn)->available & 4))

typedef struct {
    ngx_rbtree_node_t         node;      /* key: crc32 of the bare JID */
    ngx_pid_t                 pid;
    uint64_t                  sid;
    ngx_int_t                 priority;
    u_char                    available;
    u_char                    roles;     /* NGX_XMPP_ROLE_* */
    u_short                   bare_len;
    u_short                   res_len;
    /* for the admin console's session list (ngx_xmpp_admin_ops.c) */
    time_t                    since;
    u_char                    transport;  /* index of ..._transports */
    u_char                    ip_len;
    u_char                    ip[NGX_INET6_ADDRSTRLEN];
    u_char                    data[1];   /* bare JID, then resource */
} ngx_xmpp_registry_node_t;


static const char  *ngx_xmpp_registry_transports[] = {
    "other", "websocket", "bosh", "tcp", NULL
};


typedef struct {
    ngx_xmpp_registry_sh_t   *sh;
    ngx_slab_pool_t          *shpool;
} ngx_xmpp_registry_t;


static ngx_int_t ngx_xmpp_registry_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static json_t *ngx_xmpp_registry_roles(ngx_xmpp_registry_node_t *rn);


#define ngx_xmpp_registry_get(xcf)                                         \
    ((ngx_xmpp_registry_t *) (xcf)->registry_zone->data)


ngx_shm_zone_t *
ngx_xmpp_registry_add_zone(ngx_conf_t *cf, size_t size)
{
    ngx_str_t        name;
    ngx_shm_zone_t  *zone;

    ngx_str_set(&name, "conclave_registry");

    zone = ngx_shared_memory_add(cf, &name, size, &ngx_http_conclave_module);
    if (zone == NULL) {
        return NULL;
    }

    if (zone->data == NULL) {
        zone->data = ngx_pcalloc(cf->pool, sizeof(ngx_xmpp_registry_t));
        if (zone->data == NULL) {
            return NULL;
        }
    }

    zone->init = ngx_xmpp_registry_init_zone;

    return zone;
}


static ngx_int_t
ngx_xmpp_registry_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_xmpp_registry_t  *oreg = data;

    ngx_xmpp_registry_t  *reg;

    reg = shm_zone->data;

    if (oreg) {
        reg->sh = oreg->sh;
        reg->shpool = oreg->shpool;
        return NGX_OK;
    }

    reg->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        reg->sh = reg->shpool->data;
        return NGX_OK;
    }

    reg->sh = ngx_slab_alloc(reg->shpool, sizeof(ngx_xmpp_registry_sh_t));
    if (reg->sh == NULL) {
        return NGX_ERROR;
    }

    reg->shpool->data = reg->sh;

    ngx_rbtree_init(&reg->sh->rbtree, &reg->sh->sentinel,
                    ngx_rbtree_insert_value);

    /* the inter-worker datagrams carry this; only nginx can read it */
    if (RAND_bytes(reg->sh->secret, sizeof(reg->sh->secret)) != 1) {
        ngx_log_error(NGX_LOG_EMERG, shm_zone->shm.log, 0,
                      "RAND_bytes() failed for the registry secret");
        return NGX_ERROR;
    }

    reg->shpool->log_nomem = 0;

    return NGX_OK;
}


u_char *
ngx_xmpp_registry_secret(ngx_xmpp_conf_t *xcf)
{
    return ngx_xmpp_registry_get(xcf)->sh->secret;
}


static ngx_inline ngx_int_t
ngx_xmpp_registry_is(ngx_xmpp_registry_node_t *rn, ngx_str_t *bare)
{
    return rn->bare_len == bare->len
           && ngx_memcmp(rn->data, bare->data, bare->len) == 0;
}


/*
 * Equal keys may sit on both sides of a node after rotations, so the
 * walk descends into both children whenever a key matches.
 */
static ngx_uint_t
ngx_xmpp_registry_find_locked(ngx_rbtree_node_t *node,
    ngx_rbtree_node_t *sentinel, ngx_rbtree_key_t key, ngx_str_t *bare,
    ngx_xmpp_registry_node_t **out, ngx_uint_t n, ngx_uint_t max)
{
    while (node != sentinel) {
        if (key < node->key) {
            node = node->left;
            continue;
        }

        if (key > node->key) {
            node = node->right;
            continue;
        }

        if (n < max
            && ngx_xmpp_registry_is((ngx_xmpp_registry_node_t *) node, bare))
        {
            out[n++] = (ngx_xmpp_registry_node_t *) node;
        }

        n = ngx_xmpp_registry_find_locked(node->left, sentinel, key, bare,
                                          out, n, max);
        node = node->right;
    }

    return n;
}


ngx_int_t
ngx_xmpp_registry_add(ngx_xmpp_session_t *s, ngx_pid_t *old_pid,
    uint64_t *old_sid)
{
    size_t                     size;
    ngx_uint_t                 i, n, others;
    ngx_rbtree_key_t           key;
    ngx_xmpp_registry_t       *reg;
    ngx_xmpp_registry_node_t  *found[NGX_XMPP_ROUTE_MAX], *rn, *conflict;

    reg = ngx_xmpp_registry_get(s->conf);
    key = ngx_crc32_short(s->jid.bare.data, s->jid.bare.len);

    *old_pid = 0;
    *old_sid = 0;

    ngx_shmtx_lock(&reg->shpool->mutex);

    n = ngx_xmpp_registry_find_locked(reg->sh->rbtree.root,
                                      reg->sh->rbtree.sentinel, key,
                                      &s->jid.bare, found,
                                      0, NGX_XMPP_ROUTE_MAX);
    conflict = NULL;

    for (i = 0; i < n; i++) {
        if (found[i]->res_len == s->jid.resource.len
            && ngx_memcmp(found[i]->data + found[i]->bare_len,
                          s->jid.resource.data, s->jid.resource.len) == 0)
        {
            conflict = found[i];
            break;
        }
    }

    if (conflict && s->conf->resource_conflict == NGX_XMPP_CONFLICT_REJECT) {
        ngx_shmtx_unlock(&reg->shpool->mutex);
        return NGX_DECLINED;
    }

    others = conflict ? n - 1 : n;

    if (others >= s->conf->max_sessions_per_user
        || others >= NGX_XMPP_ROUTE_MAX)
    {
        ngx_shmtx_unlock(&reg->shpool->mutex);
        ngx_log_error(NGX_LOG_INFO, s->connection->log, 0,
                      "xmpp: \"%V\" already has %ui sessions",
                      &s->jid.bare, others);
        return NGX_BUSY;
    }

    size = offsetof(ngx_xmpp_registry_node_t, data)
           + s->jid.bare.len + s->jid.resource.len;

    rn = ngx_slab_alloc_locked(reg->shpool, size);
    if (rn == NULL) {
        ngx_shmtx_unlock(&reg->shpool->mutex);
        ngx_log_error(NGX_LOG_ERR, s->connection->log, 0,
                      "xmpp: registry zone is full, raise "
                      "conclave_registry_size");
        return NGX_ERROR;
    }

    if (conflict) {
        *old_pid = conflict->pid;
        *old_sid = conflict->sid;

        if (ngx_xmpp_registry_has_carbons(conflict)) {
            reg->sh->carbons--;
        }

        ngx_rbtree_delete(&reg->sh->rbtree, &conflict->node);
        ngx_slab_free_locked(reg->shpool, conflict);
        reg->sh->count--;
    }

    rn->node.key = key;
    rn->pid = ngx_pid;
    rn->sid = s->id;
    rn->priority = 0;
    rn->available = 0;
    rn->roles = (u_char) s->roles;
    rn->bare_len = (u_short) s->jid.bare.len;
    rn->res_len = (u_short) s->jid.resource.len;
    rn->since = ngx_time();
    rn->transport = 0;

    for (i = 1; ngx_xmpp_registry_transports[i]; i++) {
        if (ngx_strcmp(s->transport->name.data,
                       ngx_xmpp_registry_transports[i]) == 0)
        {
            rn->transport = (u_char) i;
        }
    }

    rn->ip_len = (u_char) ngx_min(s->connection->addr_text.len,
                                  sizeof(rn->ip));
    ngx_memcpy(rn->ip, s->connection->addr_text.data, rn->ip_len);
    ngx_memcpy(rn->data, s->jid.bare.data, s->jid.bare.len);
    ngx_memcpy(rn->data + rn->bare_len, s->jid.resource.data,
               s->jid.resource.len);

    ngx_rbtree_insert(&reg->sh->rbtree, &rn->node);
    reg->sh->count++;

    ngx_shmtx_unlock(&reg->shpool->mutex);

    return NGX_OK;
}


static ngx_xmpp_registry_node_t *
ngx_xmpp_registry_own_locked(ngx_xmpp_registry_t *reg, ngx_xmpp_session_t *s)
{
    ngx_uint_t                 i, n;
    ngx_rbtree_key_t           key;
    ngx_xmpp_registry_node_t  *found[NGX_XMPP_ROUTE_MAX];

    key = ngx_crc32_short(s->jid.bare.data, s->jid.bare.len);

    n = ngx_xmpp_registry_find_locked(reg->sh->rbtree.root,
                                      reg->sh->rbtree.sentinel, key,
                                      &s->jid.bare, found,
                                      0, NGX_XMPP_ROUTE_MAX);

    for (i = 0; i < n; i++) {
        if (found[i]->pid == ngx_pid && found[i]->sid == s->id) {
            return found[i];
        }
    }

    return NULL;
}


/* only this session's own entry: a newer session may own the resource */
void
ngx_xmpp_registry_remove(ngx_xmpp_session_t *s)
{
    ngx_xmpp_registry_t       *reg;
    ngx_xmpp_registry_node_t  *rn;

    reg = ngx_xmpp_registry_get(s->conf);

    ngx_shmtx_lock(&reg->shpool->mutex);

    rn = ngx_xmpp_registry_own_locked(reg, s);

    if (rn) {
        if (ngx_xmpp_registry_has_carbons(rn)) {
            reg->sh->carbons--;
        }

        ngx_rbtree_delete(&reg->sh->rbtree, &rn->node);
        ngx_slab_free_locked(reg->shpool, rn);
        reg->sh->count--;
    }

    ngx_shmtx_unlock(&reg->shpool->mutex);
}


void
ngx_xmpp_registry_update(ngx_xmpp_session_t *s)
{
    ngx_xmpp_registry_t       *reg;
    ngx_xmpp_registry_node_t  *rn;

    reg = ngx_xmpp_registry_get(s->conf);

    ngx_shmtx_lock(&reg->shpool->mutex);

    rn = ngx_xmpp_registry_own_locked(reg, s);

    if (rn) {
        if (ngx_xmpp_registry_has_carbons(rn)) {
            reg->sh->carbons--;
        }

        /*
         * bit 0: available; bit 1: interested in roster pushes; bit 2:
         * XEP-0280 carbons enabled
         */
        rn->available = (u_char) (s->available
                                  | (s->roster_interested << 1)
                                  | (s->carbons << 2));

        if (ngx_xmpp_registry_has_carbons(rn)) {
            reg->sh->carbons++;
        }

        rn->priority = s->priority;
        rn->roles = (u_char) s->roles;
    }

    ngx_shmtx_unlock(&reg->shpool->mutex);
}


/*
 * XEP-0198 resumption: the entry of a detached session (old_pid,
 * old_sid) passes to the session that resumes it, in one step, so a
 * stanza routed meanwhile reaches one of the two, which hand it on.
 * NGX_DECLINED: there is no such entry any more.
 */
ngx_int_t
ngx_xmpp_registry_move(ngx_xmpp_conf_t *xcf, ngx_str_t *bare,
    ngx_pid_t old_pid, uint64_t old_sid, ngx_pid_t pid, uint64_t sid)
{
    ngx_int_t                  rc;
    ngx_uint_t                 i, n;
    ngx_rbtree_key_t           key;
    ngx_xmpp_registry_t       *reg;
    ngx_xmpp_registry_node_t  *found[NGX_XMPP_ROUTE_MAX];

    reg = ngx_xmpp_registry_get(xcf);
    key = ngx_crc32_short(bare->data, bare->len);
    rc = NGX_DECLINED;

    ngx_shmtx_lock(&reg->shpool->mutex);

    n = ngx_xmpp_registry_find_locked(reg->sh->rbtree.root,
                                      reg->sh->rbtree.sentinel, key, bare,
                                      found, 0, NGX_XMPP_ROUTE_MAX);

    for (i = 0; i < n; i++) {
        if (found[i]->pid == old_pid && found[i]->sid == old_sid) {
            found[i]->pid = pid;
            found[i]->sid = sid;
            rc = NGX_OK;
            break;
        }
    }

    ngx_shmtx_unlock(&reg->shpool->mutex);

    return rc;
}


ngx_uint_t
ngx_xmpp_registry_lookup(ngx_xmpp_conf_t *xcf, ngx_str_t *bare,
    ngx_xmpp_route_t *routes, ngx_uint_t max)
{
    ngx_uint_t                 i, n;
    ngx_rbtree_key_t           key;
    ngx_xmpp_registry_t       *reg;
    ngx_xmpp_registry_node_t  *found[NGX_XMPP_ROUTE_MAX];

    reg = ngx_xmpp_registry_get(xcf);
    key = ngx_crc32_short(bare->data, bare->len);

    if (max > NGX_XMPP_ROUTE_MAX) {
        max = NGX_XMPP_ROUTE_MAX;
    }

    ngx_shmtx_lock(&reg->shpool->mutex);

    n = ngx_xmpp_registry_find_locked(reg->sh->rbtree.root,
                                      reg->sh->rbtree.sentinel, key, bare,
                                      found, 0, max);

    for (i = 0; i < n; i++) {
        routes[i].pid = found[i]->pid;
        routes[i].sid = found[i]->sid;
        routes[i].priority = found[i]->priority;
        routes[i].available = found[i]->available & 1;
        routes[i].interested = (found[i]->available >> 1) & 1;
        routes[i].carbons = (found[i]->available >> 2) & 1;
        routes[i].resource_len = found[i]->res_len;
        ngx_memcpy(routes[i].resource, found[i]->data + found[i]->bare_len,
                   found[i]->res_len);
    }

    ngx_shmtx_unlock(&reg->shpool->mutex);

    return n;
}


/*
 * Whether any session anywhere has XEP-0280 carbons enabled.  Read
 * without the lock: a resource that enables carbons while a message is
 * being routed may or may not get its copy, as with a lookup that ran
 * just before the enable (XEP-0280 section 4 promises copies only of
 * what is routed after the server answered the <enable/>).
 */
ngx_uint_t
ngx_xmpp_registry_carbons(ngx_xmpp_conf_t *xcf)
{
    return __atomic_load_n(&ngx_xmpp_registry_get(xcf)->sh->carbons,
                           __ATOMIC_RELAXED);
}


/* a worker that died left its entries behind */
void
ngx_xmpp_registry_purge_pid(ngx_xmpp_conf_t *xcf, ngx_pid_t pid)
{
    ngx_uint_t                 n;
    ngx_rbtree_node_t         *node, *next, *root, *sentinel;
    ngx_xmpp_registry_t       *reg;
    ngx_xmpp_registry_node_t  *rn;

    reg = ngx_xmpp_registry_get(xcf);
    n = 0;

    ngx_shmtx_lock(&reg->shpool->mutex);

    sentinel = reg->sh->rbtree.sentinel;
    root = reg->sh->rbtree.root;

    node = (root == sentinel) ? NULL : ngx_rbtree_min(root, sentinel);

    while (node) {
        next = ngx_rbtree_next(&reg->sh->rbtree, node);
        rn = (ngx_xmpp_registry_node_t *) node;

        if (rn->pid == pid) {
            if (rn->available == NGX_XMPP_REGISTRY_ROOM) {
                reg->sh->rooms--;
            } else {
                reg->sh->count--;
                n++;
            }

            if (ngx_xmpp_registry_has_carbons(rn)) {
                reg->sh->carbons--;
            }

            ngx_rbtree_delete(&reg->sh->rbtree, node);
            ngx_slab_free_locked(reg->shpool, rn);
        }

        node = next;
    }

    ngx_shmtx_unlock(&reg->shpool->mutex);

    if (n) {
        ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                      "xmpp: removed %ui sessions of gone worker %P", n, pid);
    }
}


/* pids in the registry that no longer exist */
void
ngx_xmpp_registry_purge_dead(ngx_xmpp_conf_t *xcf)
{
    ngx_pid_t                  dead[64];
    ngx_uint_t                 i, n;
    ngx_rbtree_node_t         *node, *root, *sentinel;
    ngx_xmpp_registry_t       *reg;
    ngx_xmpp_registry_node_t  *rn;

    reg = ngx_xmpp_registry_get(xcf);
    n = 0;

    ngx_shmtx_lock(&reg->shpool->mutex);

    sentinel = reg->sh->rbtree.sentinel;
    root = reg->sh->rbtree.root;

    node = (root == sentinel) ? NULL : ngx_rbtree_min(root, sentinel);

    for ( /* void */ ; node; node = ngx_rbtree_next(&reg->sh->rbtree, node)) {
        rn = (ngx_xmpp_registry_node_t *) node;

        for (i = 0; i < n; i++) {
            if (dead[i] == rn->pid) {
                break;
            }
        }

        if (i == n && n < 64 && kill(rn->pid, 0) == -1 && errno == ESRCH) {
            dead[n++] = rn->pid;
        }
    }

    ngx_shmtx_unlock(&reg->shpool->mutex);

    for (i = 0; i < n; i++) {
        ngx_xmpp_registry_purge_pid(xcf, dead[i]);
    }
}


/*
 * The owner of a room (XEP-0045 on conclave_muc_domain): the worker
 * named in its entry, or this worker, which claims it now.  Rooms and
 * users live in different domains, so their entries never mix.
 */
ngx_int_t
ngx_xmpp_registry_room(ngx_xmpp_conf_t *xcf, ngx_str_t *room,
    ngx_pid_t *owner)
{
    ngx_uint_t                 n;
    ngx_rbtree_key_t           key;
    ngx_xmpp_registry_t       *reg;
    ngx_xmpp_registry_node_t  *found[1], *rn;

    reg = ngx_xmpp_registry_get(xcf);
    key = ngx_crc32_short(room->data, room->len);

    ngx_shmtx_lock(&reg->shpool->mutex);

    n = ngx_xmpp_registry_find_locked(reg->sh->rbtree.root,
                                      reg->sh->rbtree.sentinel, key, room,
                                      found, 0, 1);
    if (n) {
        *owner = found[0]->pid;
        ngx_shmtx_unlock(&reg->shpool->mutex);
        return NGX_OK;
    }

    rn = ngx_slab_alloc_locked(reg->shpool,
                               offsetof(ngx_xmpp_registry_node_t, data)
                               + room->len);
    if (rn == NULL) {
        ngx_shmtx_unlock(&reg->shpool->mutex);
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "xmpp: registry zone is full, raise "
                      "conclave_registry_size");
        return NGX_ERROR;
    }

    rn->node.key = key;
    rn->pid = ngx_pid;
    rn->sid = 0;
    rn->priority = 0;
    rn->available = NGX_XMPP_REGISTRY_ROOM;
    rn->bare_len = (u_short) room->len;
    rn->res_len = 0;
    rn->since = ngx_time();
    rn->transport = 0;
    rn->ip_len = 0;
    ngx_memcpy(rn->data, room->data, room->len);

    ngx_rbtree_insert(&reg->sh->rbtree, &rn->node);
    reg->sh->rooms++;

    ngx_shmtx_unlock(&reg->shpool->mutex);

    *owner = ngx_pid;

    return NGX_OK;
}


/* this worker no longer holds the room */
void
ngx_xmpp_registry_room_release(ngx_xmpp_conf_t *xcf, ngx_str_t *room)
{
    ngx_uint_t                 n;
    ngx_rbtree_key_t           key;
    ngx_xmpp_registry_t       *reg;
    ngx_xmpp_registry_node_t  *found[1];

    reg = ngx_xmpp_registry_get(xcf);
    key = ngx_crc32_short(room->data, room->len);

    ngx_shmtx_lock(&reg->shpool->mutex);

    n = ngx_xmpp_registry_find_locked(reg->sh->rbtree.root,
                                      reg->sh->rbtree.sentinel, key, room,
                                      found, 0, 1);

    if (n && found[0]->pid == ngx_pid
        && found[0]->available == NGX_XMPP_REGISTRY_ROOM)
    {
        ngx_rbtree_delete(&reg->sh->rbtree, &found[0]->node);
        ngx_slab_free_locked(reg->shpool, found[0]);
        reg->sh->rooms--;
    }

    ngx_shmtx_unlock(&reg->shpool->mutex);
}


/* XEP-0045 6.3: a hidden room is not in the service's items */
void
ngx_xmpp_registry_room_hide(ngx_xmpp_conf_t *xcf, ngx_str_t *room,
    ngx_uint_t hidden)
{
    ngx_uint_t                 n;
    ngx_rbtree_key_t           key;
    ngx_xmpp_registry_t       *reg;
    ngx_xmpp_registry_node_t  *found[1];

    reg = ngx_xmpp_registry_get(xcf);
    key = ngx_crc32_short(room->data, room->len);

    ngx_shmtx_lock(&reg->shpool->mutex);

    n = ngx_xmpp_registry_find_locked(reg->sh->rbtree.root,
                                      reg->sh->rbtree.sentinel, key, room,
                                      found, 0, 1);

    if (n && found[0]->pid == ngx_pid
        && found[0]->available == NGX_XMPP_REGISTRY_ROOM)
    {
        found[0]->priority = hidden ? 1 : 0;
    }

    ngx_shmtx_unlock(&reg->shpool->mutex);
}


ngx_uint_t
ngx_xmpp_registry_rooms(ngx_xmpp_conf_t *xcf)
{
    return ngx_xmpp_registry_get(xcf)->sh->rooms;
}


/*
 * The rooms held by some worker, for XEP-0030 items of the service:
 * at most max JIDs, copied into pool.
 */
ngx_uint_t
ngx_xmpp_registry_room_list(ngx_xmpp_conf_t *xcf, ngx_pool_t *pool,
    ngx_str_t *out, ngx_uint_t max)
{
    ngx_uint_t                 n;
    ngx_rbtree_node_t         *node, *root, *sentinel;
    ngx_xmpp_registry_t       *reg;
    ngx_xmpp_registry_node_t  *rn;

    reg = ngx_xmpp_registry_get(xcf);
    n = 0;

    ngx_shmtx_lock(&reg->shpool->mutex);

    sentinel = reg->sh->rbtree.sentinel;
    root = reg->sh->rbtree.root;

    node = (root == sentinel) ? NULL : ngx_rbtree_min(root, sentinel);

    for ( /* void */ ; node && n < max;
         node = ngx_rbtree_next(&reg->sh->rbtree, node))
    {
        rn = (ngx_xmpp_registry_node_t *) node;

        if (rn->available != NGX_XMPP_REGISTRY_ROOM || rn->priority) {
            continue;
        }

        out[n].data = ngx_pnalloc(pool, rn->bare_len);
        if (out[n].data == NULL) {
            break;
        }

        ngx_memcpy(out[n].data, rn->data, rn->bare_len);
        out[n].len = rn->bare_len;
        n++;
    }

    ngx_shmtx_unlock(&reg->shpool->mutex);

    return n;
}


/* the session's directory roles, by name, for the admin console */
static json_t *
ngx_xmpp_registry_roles(ngx_xmpp_registry_node_t *rn)
{
    json_t  *a;

    a = json_array();
    if (a == NULL) {
        return NULL;
    }

    if (rn->roles & NGX_XMPP_ROLE_USER) {
        json_array_append_new(a, json_string("user"));
    }

    if (rn->roles & NGX_XMPP_ROLE_ADMIN) {
        json_array_append_new(a, json_string("admin"));
    }

    if (rn->roles & NGX_XMPP_ROLE_COMPLIANCE) {
        json_array_append_new(a, json_string("compliance"));
    }

    if (rn->roles & NGX_XMPP_ROLE_AUDITOR) {
        json_array_append_new(a, json_string("auditor"));
    }

    return a;
}


/*
 * Every bound resource, for the admin console: jid, resource, worker,
 * presence, since, transport, ip, session (unique within its worker),
 * directory roles.
 */
json_t *
ngx_xmpp_registry_sessions(ngx_xmpp_conf_t *xcf)
{
    json_t                    *list, *item;
    ngx_rbtree_node_t         *node, *root, *sentinel;
    ngx_xmpp_registry_t       *reg;
    ngx_xmpp_registry_node_t  *rn;

    reg = ngx_xmpp_registry_get(xcf);

    list = json_array();
    if (list == NULL) {
        return NULL;
    }

    ngx_shmtx_lock(&reg->shpool->mutex);

    sentinel = reg->sh->rbtree.sentinel;
    root = reg->sh->rbtree.root;

    node = (root == sentinel) ? NULL : ngx_rbtree_min(root, sentinel);

    for ( /* void */ ; node; node = ngx_rbtree_next(&reg->sh->rbtree, node)) {
        rn = (ngx_xmpp_registry_node_t *) node;

        if (rn->available == NGX_XMPP_REGISTRY_ROOM) {
            continue;
        }

        item = json_pack("{s:s%,s:s%,s:I,s:b,s:I,s:I,s:s,s:s%,s:o}",
                         "jid", (char *) rn->data, (size_t) rn->bare_len,
                         "resource", (char *) rn->data + rn->bare_len,
                         (size_t) rn->res_len,
                         "worker_pid", (json_int_t) rn->pid,
                         "available", (int) (rn->available & 1),
                         "priority", (json_int_t) rn->priority,
                         "since", (json_int_t) rn->since,
                         "transport",
                         ngx_xmpp_registry_transports[rn->transport],
                         "ip", (char *) rn->ip, (size_t) rn->ip_len,
                         "session", json_sprintf("%016" PRIx64, rn->sid));
        if (item == NULL) {
            break;
        }

        json_object_set_new(item, "roles", ngx_xmpp_registry_roles(rn));
        json_array_append_new(list, item);
    }

    ngx_shmtx_unlock(&reg->shpool->mutex);

    return list;
}


/* the conclave_status document: counts and every bound resource */
ngx_int_t
ngx_xmpp_registry_json(ngx_xmpp_conf_t *xcf, ngx_pool_t *pool, ngx_str_t *out)
{
    char                      *text;
    json_t                    *doc, *list, *rooms, *item;
    ngx_rbtree_node_t         *node, *root, *sentinel;
    ngx_xmpp_registry_t       *reg;
    ngx_xmpp_registry_node_t  *rn;

    reg = ngx_xmpp_registry_get(xcf);

    doc = json_object();
    list = json_array();
    rooms = json_array();

    if (doc == NULL || list == NULL || rooms == NULL) {
        json_decref(rooms);
        goto failed;
    }

    ngx_shmtx_lock(&reg->shpool->mutex);

    json_object_set_new(doc, "sessions_total", json_integer(reg->sh->count));
    json_object_set_new(doc, "sessions_carbons",
                        json_integer(reg->sh->carbons));

    sentinel = reg->sh->rbtree.sentinel;
    root = reg->sh->rbtree.root;

    node = (root == sentinel) ? NULL : ngx_rbtree_min(root, sentinel);

    for ( /* void */ ; node; node = ngx_rbtree_next(&reg->sh->rbtree, node)) {
        rn = (ngx_xmpp_registry_node_t *) node;

        item = json_object();
        if (item == NULL) {
            break;
        }

        if (rn->available == NGX_XMPP_REGISTRY_ROOM) {
            /* a room and the worker that owns it (docs/muc.md) */
            json_object_set_new(item, "jid",
                                json_stringn((char *) rn->data,
                                             rn->bare_len));
            json_object_set_new(item, "worker_pid", json_integer(rn->pid));
            json_array_append_new(rooms, item);
            continue;
        }

        json_object_set_new(item, "jid",
                            json_stringn((char *) rn->data, rn->bare_len));
        json_object_set_new(item, "resource",
                            json_stringn((char *) rn->data + rn->bare_len,
                                         rn->res_len));
        json_object_set_new(item, "worker_pid", json_integer(rn->pid));
        json_object_set_new(item, "available",
                            json_boolean(rn->available & 1));
        json_object_set_new(item, "priority", json_integer(rn->priority));
        json_object_set_new(item, "carbons",
                            json_boolean(ngx_xmpp_registry_has_carbons(rn)));
        json_object_set_new(item, "roles", ngx_xmpp_registry_roles(rn));
        json_array_append_new(list, item);
    }

    ngx_shmtx_unlock(&reg->shpool->mutex);

    json_object_set_new(doc, "worker_pid", json_integer(ngx_pid));
    json_object_set_new(doc, "worker_sessions",
                        json_integer(ngx_xmpp_session_count()));
    json_object_set(doc, "sessions", list);
    json_object_set_new(doc, "rooms", rooms);
    json_object_set_new(doc, "audit", ngx_xmpp_audit_json(xcf));
    json_object_set_new(doc, "ldap", ngx_xmpp_dir_json(xcf));

    text = json_dumps(doc, JSON_COMPACT);
    if (text == NULL) {
        goto failed;
    }

    out->len = ngx_strlen(text);
    out->data = ngx_pnalloc(pool, out->len);

    if (out->data) {
        ngx_memcpy(out->data, text, out->len);
    }

    free(text);
    json_decref(list);
    json_decref(doc);

    return out->data ? NGX_OK : NGX_ERROR;

failed:

    if (list) {
        json_decref(list);
    }

    if (doc) {
        json_decref(doc);
    }

    return NGX_ERROR;
}
