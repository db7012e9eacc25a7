
/*
 * XEP-0084 user avatars over a directory that owns photos, XEP-0398
 * conversion between them and vCard avatars (XEP-0153), and the vCard
 * fields users set themselves (issue 6.4).  docs/directory.md.
 *
 * Whose avatar is it?  A user whose directory entry has a photo (the
 * PHOTO mapping, jpegPhoto by default) has the directory's: the items
 * of their urn:xmpp:avatar:data and urn:xmpp:avatar:metadata nodes are
 * read from the directory (the id is the photo's SHA-1, the XEP-0153
 * hash of their presence) and any change to those nodes is
 * <not-allowed/>.  Anyone else owns their avatar, kept in their PEP
 * nodes (MariaDB, ngx_xmpp_pepdb.c): a metadata publish must name a
 * data item whose SHA-1 is its id (XEP-0398 section 3.1), and from then
 * on that image is their vCard's PHOTO and their presence hash; a vCard
 * set with a PHOTO is published to both nodes (section 3.2).  The
 * conversion holds both ways, so the account advertises
 * urn:xmpp:pep-vcard-conversion:0 (section 2).
 *
 * The vCard fields the directory does not map (NICKNAME unless mapped,
 * URL, BDAY, DESC, ...) are the user's: stored in user_vcard (schema
 * 013) and added to the directory's vCard on every get.  Values a set
 * gives for mapped fields are dropped and the directory's stay.
 *
 * Every MariaDB step is a request of the PEP adapter (one transaction,
 * ngx_xmpp_db.c); directory reads run in the LDAP thread pool.
 */


#include "ngx_xmpp.h"
#include "ngx_xmpp_pep.h"

#include <ngx_sha1.h>
#include <mysql.h>


#define NGX_XMPP_AVATAR_DATA   1
#define NGX_XMPP_AVATAR_META   2

/* the bind result waits at most this long for the avatar hash */
#define NGX_XMPP_AVATAR_BIND_WAIT  1000


typedef struct {
    uint64_t               sid;
    cdir_t                *dir;
    ngx_int_t              rc;
    cdir_vcard_t           vc;
    char                   err[256];
    char                   local[CDIR_MAX_LOGIN + 1];
    ngx_uint_t             kind;
    ngx_uint_t             max;
    ngx_str_t              owner;
    ngx_str_t              node;
    ngx_str_t              ids;
    ngx_str_t              iq_id;
    ngx_str_t              iq_to;
} ngx_xmpp_avatar_task_t;


static ngx_str_t  ngx_xmpp_avatar_data_node =
    ngx_string(NGX_XMPP_NS_AVATAR_DATA);
static ngx_str_t  ngx_xmpp_avatar_meta_node =
    ngx_string(NGX_XMPP_NS_AVATAR_META);


static ngx_uint_t
ngx_xmpp_avatar_kind(ngx_str_t *node)
{
    if (ngx_xmpp_pep_str_is(node, NGX_XMPP_NS_AVATAR_DATA)) {
        return NGX_XMPP_AVATAR_DATA;
    }

    if (ngx_xmpp_pep_str_is(node, NGX_XMPP_NS_AVATAR_META)) {
        return NGX_XMPP_AVATAR_META;
    }

    return 0;
}


/* is a vCard field served from the directory (cdir_vcard.c)? */
static ngx_uint_t
ngx_xmpp_avatar_mapped(ngx_xmpp_conf_t *xcf, ngx_uint_t field)
{
    if (xcf->ldap_vcard_attr[field].data != NULL) {
        return xcf->ldap_vcard_attr[field].len != 0;
    }

    return cdir_vcard_default[field][0] != '\0';
}


/* photos come from the directory: the avatar nodes may be its */
static ngx_uint_t
ngx_xmpp_avatar_dir(ngx_xmpp_conf_t *xcf)
{
    return xcf->dir != NULL && xcf->thread_pool != NULL
           && ngx_xmpp_avatar_mapped(xcf, CDIR_VC_PHOTO);
}


static void
ngx_xmpp_avatar_sha1(u_char *p, size_t len, u_char *hex)
{
    u_char     md[20];
    ngx_sha1_t sha;

    ngx_sha1_init(&sha);
    ngx_sha1_update(&sha, p, len);
    ngx_sha1_final(md, &sha);

    *ngx_hex_dump(hex, md, sizeof(md)) = '\0';
}


/*
 * The image's width and height where its header has them at a fixed
 * place (PNG, GIF) or a short scan away (JPEG's SOFn); 0 if unknown.
 * XEP-0084 4.2.1 makes both optional.
 */
static void
ngx_xmpp_avatar_dimensions(u_char *p, size_t len, ngx_uint_t *w,
    ngx_uint_t *h)
{
    size_t  i, seg;

    *w = 0;
    *h = 0;

    if (len >= 24 && ngx_strncmp(p, "\x89PNG", 4) == 0) {
        *w = (p[16] << 24) | (p[17] << 16) | (p[18] << 8) | p[19];
        *h = (p[20] << 24) | (p[21] << 16) | (p[22] << 8) | p[23];
        return;
    }

    if (len >= 10 && ngx_strncmp(p, "GIF8", 4) == 0) {
        *w = p[6] | (p[7] << 8);
        *h = p[8] | (p[9] << 8);
        return;
    }

    if (len < 4 || p[0] != 0xff || p[1] != 0xd8) {
        return;
    }

    for (i = 2; i + 9 < len; i += 2 + seg) {
        if (p[i] != 0xff) {
            return;
        }

        seg = (p[i + 2] << 8) | p[i + 3];

        /* SOF0..SOF15, but DHT (c4), JPG (c8) and DAC (cc) */
        if (p[i + 1] >= 0xc0 && p[i + 1] <= 0xcf && p[i + 1] != 0xc4
            && p[i + 1] != 0xc8 && p[i + 1] != 0xcc)
        {
            *h = (p[i + 5] << 8) | p[i + 6];
            *w = (p[i + 7] << 8) | p[i + 8];
            return;
        }

        if (seg < 2) {
            return;
        }
    }
}


/* the text of <data/> as stored by a publish: base64, maybe spaced */
static void
ngx_xmpp_avatar_b64(ngx_str_t *payload, ngx_str_t *b64)
{
    u_char  *p, *end;

    b64->len = 0;
    b64->data = payload->data;

    p = ngx_strlchr(payload->data, payload->data + payload->len, '>');
    end = payload->data + payload->len;

    if (p == NULL || p[-1] == '/') {
        return;
    }

    p++;

    while (end > p && end[-1] != '<') {
        end--;
    }

    if (end > p) {
        b64->data = p;
        b64->len = end - 1 - p;
    }
}


/* base64 without white space, decoded into malloc()ed memory */
static u_char *
ngx_xmpp_avatar_decode(ngx_str_t *b64, size_t *len)
{
    u_char     *clean, *out;
    size_t      i, n;
    ngx_str_t   src, dst;

    clean = malloc(b64->len + 1);
    if (clean == NULL) {
        return NULL;
    }

    for (i = 0, n = 0; i < b64->len; i++) {
        if (b64->data[i] != ' ' && b64->data[i] != '\t'
            && b64->data[i] != '\r' && b64->data[i] != '\n')
        {
            clean[n++] = b64->data[i];
        }
    }

    out = malloc(ngx_base64_decoded_length(n) + 1);
    if (out == NULL) {
        free(clean);
        return NULL;
    }

    src.data = clean;
    src.len = n;
    dst.data = out;

    if (n == 0 || ngx_decode_base64(&dst, &src) != NGX_OK) {
        free(clean);
        free(out);
        return NULL;
    }

    free(clean);
    *len = dst.len;

    return out;
}


/* <info/> of XEP-0084 4.2.1 for an image */
static void
ngx_xmpp_avatar_info(ngx_xmpp_wbuf_t *b, u_char *hash, u_char *img,
    size_t len, const char *type)
{
    u_char      num[4 * NGX_INT_T_LEN];
    ngx_uint_t  w, h;

    ngx_xmpp_avatar_dimensions(img, len, &w, &h);

    ngx_xmpp_wbuf_lit(b, "<info id='");
    ngx_xmpp_wbuf_str(b, (char *) hash);
    ngx_xmpp_wbuf_lit(b, "' bytes='");
    ngx_xmpp_wbuf_add(b, num, ngx_sprintf(num, "%uz", len) - num);
    ngx_xmpp_wbuf_lit(b, "' type='");
    ngx_xmpp_wbuf_str(b, type);

    if (w && h) {
        ngx_xmpp_wbuf_add(b, num, ngx_sprintf(num, "' width='%ui' height='%ui",
                                              w, h) - num);
    }

    ngx_xmpp_wbuf_lit(b, "'/>");
}


static void
ngx_xmpp_avatar_st_error(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st,
    const char *type, const char *cond, const char *app, const char *text)
{
    ngx_str_t  *to;

    to = st->has_to ? ngx_xmpp_node_attr(st->node, "to") : NULL;

    ngx_xmpp_pep_error(s, &st->id, to, type, cond, app, text);
}


/* ---- who hears of a new avatar hash ---- */


/* the hash every resource of bare puts in its presence from now on */
static void
ngx_xmpp_avatar_changed(ngx_xmpp_conf_t *xcf, ngx_str_t *bare,
    u_char *hash)
{
    size_t             len;
    ngx_uint_t         i, n;
    ngx_xmpp_route_t  *routes;

    len = ngx_strlen(hash);
    routes = ngx_xmpp_router_routes();
    n = ngx_xmpp_registry_lookup(xcf, bare, routes, NGX_XMPP_ROUTE_MAX);

    for (i = 0; i < n; i++) {
        if (routes[i].pid == ngx_pid) {
            ngx_xmpp_avatar_ipc(routes[i].sid, hash, len);
            continue;
        }

        (void) ngx_xmpp_ipc_send(routes[i].pid, NGX_XMPP_IPC_AVATAR,
                                 routes[i].sid, hash, len);
    }
}


/* NGX_XMPP_IPC_AVATAR: a session of this worker gets its new hash */
void
ngx_xmpp_avatar_ipc(uint64_t sid, u_char *data, size_t len)
{
    ngx_xmpp_session_t  *s;

    s = ngx_xmpp_session_find(sid);

    if (s && !s->bound) {
        /* XEP-0198: being resumed */
        (void) ngx_xmpp_sm_hold_ipc(s, NGX_XMPP_IPC_AVATAR, data, len);
        return;
    }

    if (s == NULL || !s->bound || s->photo_dir
        || (len != 0 && len != 40))
    {
        return;
    }

    ngx_memcpy(s->photo_hash, data, len);
    s->photo_hash[len] = '\0';
}


/* pep_done() after a change was committed and answered */
void
ngx_xmpp_avatar_published(ngx_xmpp_conf_t *xcf, ngx_xmpp_pep_ctx_t *ctx)
{
    if ((ctx->op == NGX_XMPP_PEP_PUBLISH || ctx->op == NGX_XMPP_PEP_VCARD_SET)
        && ctx->avatar)
    {
        ngx_xmpp_avatar_changed(xcf, &ctx->owner, ctx->avatar_hash);
        return;
    }

    if ((ctx->op == NGX_XMPP_PEP_RETRACT || ctx->op == NGX_XMPP_PEP_DELETE)
        && ngx_xmpp_pep_str_is(&ctx->node, NGX_XMPP_NS_AVATAR_META))
    {
        /* XEP-0084 4.6: no metadata, no avatar */
        ngx_xmpp_avatar_changed(xcf, &ctx->owner, (u_char *) "");
    }
}


/* ---- the avatar nodes of a directory photo ---- */


static void ngx_xmpp_avatar_thread(void *data, ngx_log_t *log);
static void ngx_xmpp_avatar_read_done(ngx_event_t *ev);


static u_char *
ngx_xmpp_avatar_keep(u_char *p, ngx_str_t *dst, ngx_str_t *src)
{
    dst->data = p;
    dst->len = src ? src->len : 0;

    return dst->len ? ngx_cpymem(p, src->data, src->len) : p;
}


/*
 * XEP-0163 on an avatar node (pep_iq, after its checks): NGX_DECLINED
 * sends the request on to PEP; otherwise it is answered here.
 */
ngx_int_t
ngx_xmpp_avatar_pep(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st,
    ngx_xmpp_node_t *a, ngx_str_t *owner, ngx_str_t *node, ngx_uint_t get)
{
    u_char                  *p;
    size_t                   size;
    ngx_str_t                ids, *to, local;
    ngx_uint_t               kind, own, max;
    ngx_thread_task_t       *task;
    ngx_xmpp_avatar_task_t  *t;

    kind = ngx_xmpp_avatar_kind(node);

    if (kind == 0 || !ngx_xmpp_avatar_dir(s->conf)) {
        return NGX_DECLINED;
    }

    own = (owner->len == s->jid.bare.len
           && ngx_strncmp(owner->data, s->jid.bare.data, owner->len) == 0);

    if (!get) {
        /* only the owner gets here (pep_iq) */
        if (!s->photo_dir) {
            return NGX_DECLINED;
        }

        ngx_xmpp_avatar_st_error(s, st, "cancel", "not-allowed", NULL,
                                 "the avatar is the photo in the company "
                                 "directory: change it there");
        return NGX_OK;
    }

    if (!ngx_xmpp_pep_str_is(&a->name, "items") || (own && !s->photo_dir)) {
        return NGX_DECLINED;
    }

    local = st->has_to ? st->to.local : s->jid.local;

    if (local.len == 0 || local.len > CDIR_MAX_LOGIN) {
        return NGX_DECLINED;
    }

    max = 0;
    ngx_str_null(&ids);

    if (ngx_xmpp_pep_parse_items(s, st, a, &max, &ids) != NGX_OK) {
        return NGX_OK;
    }

    to = st->has_to ? ngx_xmpp_node_attr(st->node, "to") : NULL;
    size = owner->len + node->len + ids.len + st->id.len
           + (to ? to->len : 0);

    /* on the heap: the session may end before the directory answers */
    task = ngx_calloc(sizeof(ngx_thread_task_t)
                      + sizeof(ngx_xmpp_avatar_task_t) + size,
                      s->connection->log);
    if (task == NULL) {
        ngx_xmpp_avatar_st_error(s, st, "wait", "internal-server-error",
                                 NULL, NULL);
        return NGX_OK;
    }

    t = (ngx_xmpp_avatar_task_t *) (task + 1);
    p = (u_char *) (t + 1);

    t->sid = s->id;
    t->dir = s->conf->dir;
    t->kind = kind;
    t->max = max;
    ngx_memcpy(t->local, local.data, local.len);
    ngx_xmpp_ascii_lower((u_char *) t->local, local.len);

    p = ngx_xmpp_avatar_keep(p, &t->owner, owner);
    p = ngx_xmpp_avatar_keep(p, &t->node, node);
    p = ngx_xmpp_avatar_keep(p, &t->ids, &ids);
    p = ngx_xmpp_avatar_keep(p, &t->iq_id, &st->id);
    (void) ngx_xmpp_avatar_keep(p, &t->iq_to, to);

    task->ctx = t;
    task->handler = ngx_xmpp_avatar_thread;
    task->event.handler = ngx_xmpp_avatar_read_done;
    task->event.data = task;
    task->event.log = ngx_cycle->log;

    if (ngx_thread_task_post(s->conf->thread_pool, task) != NGX_OK) {
        ngx_free(task);
        ngx_xmpp_avatar_st_error(s, st, "wait", "resource-constraint", NULL,
                                 NULL);
    }

    return NGX_OK;
}


/* in a pool thread: the owner's entry and photo */
static void
ngx_xmpp_avatar_thread(void *data, ngx_log_t *log)
{
    ngx_xmpp_avatar_task_t  *t = data;

    t->rc = cdir_vcard(t->dir, "", t->local, &t->vc, t->err,
                       sizeof(t->err));
}


/* is the photo's item among those asked for (none: all)? */
static ngx_uint_t
ngx_xmpp_avatar_wanted(ngx_xmpp_avatar_task_t *t)
{
    u_char     *p, *end;
    ngx_str_t   id;

    p = t->ids.data;
    end = t->ids.data + t->ids.len;

    if (t->ids.len == 0) {
        return 1;
    }

    while (ngx_xmpp_pep_get(&p, end, &id, 0) == NGX_OK) {
        if (id.len == 40
            && ngx_strncasecmp(id.data, (u_char *) t->vc.photo_hash, 40)
               == 0)
        {
            return 1;
        }
    }

    return 0;
}


/* XEP-0084 4.1 and 4.2: the directory's photo as the one item */
static void
ngx_xmpp_avatar_items(ngx_xmpp_session_t *s, ngx_xmpp_avatar_task_t *t)
{
    ngx_str_t         src, dst;
    ngx_xmpp_wbuf_t  *b;

    b = ngx_xmpp_pep_result(s, &t->iq_id, &t->iq_to, s->conf->max_output);

    ngx_xmpp_wbuf_lit(b, "><pubsub xmlns='" NGX_XMPP_NS_PUBSUB "'>"
                      "<items node='");
    ngx_xmpp_wbuf_escs(b, &t->node);
    ngx_xmpp_wbuf_lit(b, "'>");

    if (ngx_xmpp_avatar_wanted(t)) {
        ngx_xmpp_wbuf_lit(b, "<item id='");
        ngx_xmpp_wbuf_str(b, t->vc.photo_hash);
        ngx_xmpp_wbuf_lit(b, "'>");

        if (t->kind == NGX_XMPP_AVATAR_DATA) {
            ngx_xmpp_wbuf_lit(b, "<data xmlns='" NGX_XMPP_NS_AVATAR_DATA
                              "'>");
            src.data = t->vc.photo;
            src.len = t->vc.photo_len;

            if (ngx_xmpp_wbuf_reserve(b, ngx_base64_encoded_length(src.len))
                == NGX_OK)
            {
                dst.data = b->last;
                ngx_encode_base64(&dst, &src);
                b->last += dst.len;
            }

            ngx_xmpp_wbuf_lit(b, "</data>");

        } else {
            ngx_xmpp_wbuf_lit(b, "<metadata xmlns='" NGX_XMPP_NS_AVATAR_META
                              "'>");
            ngx_xmpp_avatar_info(b, (u_char *) t->vc.photo_hash,
                                 t->vc.photo, t->vc.photo_len,
                                 t->vc.photo_type);
            ngx_xmpp_wbuf_lit(b, "</metadata>");
        }

        ngx_xmpp_wbuf_lit(b, "</item>");
    }

    ngx_xmpp_wbuf_lit(b, "</items></pubsub></iq>");

    if (b->failed) {
        ngx_xmpp_pep_error(s, &t->iq_id, &t->iq_to, "wait",
                           "resource-constraint", NULL,
                           "the result is too large");
        return;
    }

    (void) ngx_xmpp_session_send_wbuf(s, b);
}


/* no directory photo: the owner's own PEP nodes answer */
static void
ngx_xmpp_avatar_pep_items(ngx_xmpp_session_t *s, ngx_xmpp_avatar_task_t *t)
{
    ngx_str_t           *in[8];
    ngx_pool_t          *pool;
    ngx_xmpp_db_req_t   *r;
    ngx_xmpp_pep_ctx_t  *ctx;

    ngx_memzero(in, sizeof(in));
    in[0] = &t->owner;
    in[1] = &t->node;
    in[4] = &t->ids;
    in[6] = &t->iq_id;
    in[7] = &t->iq_to;

    r = ngx_xmpp_pep_req(s, NULL, NGX_XMPP_PEP_ITEMS, in);
    if (r == NULL) {
        ngx_xmpp_pep_error(s, &t->iq_id, &t->iq_to, "wait",
                           "internal-server-error", NULL, NULL);
        return;
    }

    ctx = r->ctx;
    ctx->max_req = t->max;

    pool = ngx_create_pool(4096, s->connection->log);
    if (pool) {
        ctx->contact = ngx_xmpp_pep_is_contact(s, pool, &t->owner);
        ngx_destroy_pool(pool);
    }

    ngx_xmpp_pep_post(s, r);
}


static void
ngx_xmpp_avatar_read_done(ngx_event_t *ev)
{
    ngx_thread_task_t  *task = ev->data;

    ngx_xmpp_session_t      *s;
    ngx_xmpp_avatar_task_t  *t;

    t = task->ctx;
    s = ngx_xmpp_session_find(t->sid);

    if (s && s->bound && !s->finalized) {
        if (t->rc == 1 && t->vc.photo) {
            ngx_xmpp_avatar_items(s, t);

        } else {
            if (t->rc < 0) {
                ngx_log_error(NGX_LOG_WARN, s->connection->log, 0,
                              "xmpp: avatar of \"%s\" not read from the "
                              "directory: %s", t->local, t->err);
            }

            ngx_xmpp_avatar_pep_items(s, t);
        }
    }

    if (t->rc == 1) {
        cdir_vcard_free(&t->vc);
    }

    ngx_free(task);
}


/*
 * A publish to the owner's metadata node (pep_iq): hash becomes the id
 * of its first <info/> without a url (XEP-0398 3.1), "" when there is
 * none (XEP-0084 4.6: avatar disabled).  Errors are answered here.
 */
ngx_int_t
ngx_xmpp_avatar_metadata(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st,
    ngx_xmpp_node_t *publish, u_char *hash)
{
    ngx_str_t        *id;
    ngx_uint_t        i;
    ngx_xmpp_node_t  *item, *md, *c;

    hash[0] = '\0';

    item = ngx_xmpp_node_first_element(publish);
    md = item ? ngx_xmpp_node_first_element(item) : NULL;

    if (md == NULL || !ngx_xmpp_pep_str_is(&md->name, "metadata")
        || !ngx_xmpp_pep_str_is(&md->ns, NGX_XMPP_NS_AVATAR_META))
    {
        ngx_xmpp_avatar_st_error(s, st, "modify", "bad-request",
                                 "invalid-payload", NULL);
        return NGX_DECLINED;
    }

    for (c = md->child; c; c = c->next) {
        if (!ngx_xmpp_pep_str_is(&c->name, "info")
            || ngx_xmpp_node_attr(c, "url") != NULL)
        {
            continue;
        }

        id = ngx_xmpp_node_attr(c, "id");

        for (i = 0; id && id->len == 40 && i < 40; i++) {
            if (!((id->data[i] >= '0' && id->data[i] <= '9')
                  || ((id->data[i] | 0x20) >= 'a'
                      && (id->data[i] | 0x20) <= 'f')))
            {
                break;
            }
        }

        if (id == NULL || id->len != 40 || i != 40) {
            ngx_xmpp_avatar_st_error(s, st, "modify", "not-acceptable",
                                     NULL, "the info id must be the "
                                     "image's SHA-1 in hex (XEP-0084 "
                                     "4.2.1)");
            return NGX_DECLINED;
        }

        ngx_memcpy(hash, id->data, 40);
        hash[40] = '\0';
        ngx_xmpp_ascii_lower(hash, 40);

        return NGX_OK;
    }

    return NGX_OK;
}


/* ---- SQL, in the pool threads ---- */


/* columns: item_id [, payload] -> avatar_hash [, ctx->subs] */
static int
ngx_xmpp_avatar_hash_row(ngx_xmpp_db_req_t *r, ngx_str_t *cols,
    ngx_uint_t n)
{
    ngx_xmpp_pep_ctx_t  *ctx = r->ctx;

    if (cols[0].data == NULL || cols[0].len != 40) {
        return 0;
    }

    ngx_memcpy(ctx->avatar_hash, cols[0].data, 40);
    ctx->avatar_hash[40] = '\0';

    if (n > 1 && cols[1].data) {
        ngx_xmpp_pep_put32(&ctx->subs, &cols[1]);
    }

    return ctx->subs.failed ? -1 : 0;
}


/*
 * XEP-0398 3.1, in the metadata publish's transaction: the data item
 * the info names must exist and its bytes must have that SHA-1.
 */
int
ngx_xmpp_avatar_sql_check(struct st_mysql *conn, ngx_xmpp_db_req_t *r)
{
    u_char              *img, *p, hex[41];
    size_t               len;
    ngx_str_t            params[3], payload, b64;
    ngx_xmpp_pep_ctx_t  *ctx = r->ctx;

    if (ctx->avatar_hash[0] == '\0') {
        return 0;
    }

    params[0] = ctx->owner;
    params[1] = ngx_xmpp_avatar_data_node;
    params[2].data = ctx->avatar_hash;
    params[2].len = 40;

    ctx->out.last = ctx->out.start;

    if (ngx_xmpp_db_select(conn, r,
            "SELECT payload FROM pep_item WHERE owner_jid = ?"
            " AND node = ? AND item_id = ?", params, 3,
            ngx_xmpp_pep_payload_row) != 0)
    {
        return -1;
    }

    p = ctx->out.start;

    if (ngx_xmpp_pep_get(&p, ctx->out.last, &payload, 1) != NGX_OK) {
        ctx->error = NGX_XMPP_PEP_E_AVATAR;
        return 0;
    }

    ngx_xmpp_avatar_b64(&payload, &b64);

    img = ngx_xmpp_avatar_decode(&b64, &len);
    if (img == NULL) {
        ctx->error = NGX_XMPP_PEP_E_AVATAR;
        return 0;
    }

    ngx_xmpp_avatar_sha1(img, len, hex);
    free(img);

    if (ngx_strncmp(hex, ctx->avatar_hash, 40) != 0) {
        ctx->error = NGX_XMPP_PEP_E_AVATAR;
    }

    ctx->out.last = ctx->out.start;

    return 0;
}


/* the newest metadata item, if its data item exists */
static int
ngx_xmpp_avatar_sql_current(struct st_mysql *conn, ngx_xmpp_db_req_t *r,
    ngx_uint_t with_data)
{
    ngx_str_t            params[4];
    ngx_xmpp_pep_ctx_t  *ctx = r->ctx;

    params[0] = ctx->owner;
    params[1] = ngx_xmpp_avatar_meta_node;
    params[2] = ctx->owner;
    params[3] = ngx_xmpp_avatar_data_node;

    ctx->avatar_hash[0] = '\0';

    return ngx_xmpp_db_select(conn, r, with_data
        ? "SELECT m.item_id, d.payload FROM (SELECT item_id FROM pep_item"
          " WHERE owner_jid = ? AND node = ? ORDER BY seq DESC LIMIT 1) m"
          " JOIN pep_item d ON d.owner_jid = ? AND d.node = ?"
          " AND d.item_id = m.item_id"
        : "SELECT m.item_id FROM (SELECT item_id FROM pep_item"
          " WHERE owner_jid = ? AND node = ? ORDER BY seq DESC LIMIT 1) m"
          " JOIN pep_item d ON d.owner_jid = ? AND d.node = ?"
          " AND d.item_id = m.item_id",
        params, 4, ngx_xmpp_avatar_hash_row);
}


/*
 * One of the user's XEP-0084 nodes (with XEP-0163's defaults where it
 * is missing) holding just this item, or none for an empty payload: a
 * vCard set replaces the avatar (XEP-0398 3.2), it does not add one.
 */
static int
ngx_xmpp_avatar_sql_only(struct st_mysql *conn, ngx_xmpp_db_req_t *r,
    ngx_str_t *node, ngx_str_t *payload)
{
    ngx_str_t            p[4];
    ngx_xmpp_pep_ctx_t  *ctx = r->ctx;

    p[0] = ctx->owner;
    p[1] = *node;
    p[2] = ctx->item_id;
    p[3] = *payload;

    if (ngx_xmpp_db_stmt(conn, r,
            "INSERT IGNORE INTO pep_node (owner_jid, node, created_at)"
            " VALUES (?, ?, UTC_TIMESTAMP(6))", p, 2, NULL) != 0
        || ngx_xmpp_db_stmt(conn, r,
            "DELETE FROM pep_item WHERE owner_jid = ? AND node = ?",
            p, 2, NULL) != 0)
    {
        return -1;
    }

    if (payload->len == 0) {
        return 0;
    }

    return ngx_xmpp_db_stmt(conn, r,
        "INSERT INTO pep_item (owner_jid, node, item_id, payload, seq,"
        " published_at) VALUES (?, ?, ?, ?, 1, UTC_TIMESTAMP(6))",
        p, 4, NULL);
}


/* a vCard set: the user's fields, and the avatar into both nodes */
static int
ngx_xmpp_avatar_run_set(struct st_mysql *conn, ngx_xmpp_db_req_t *r)
{
    ngx_str_t            p[2];
    ngx_xmpp_pep_ctx_t  *ctx = r->ctx;

    p[0] = ctx->owner;
    p[1] = ctx->fields;

    if (ngx_xmpp_db_stmt(conn, r,
            "INSERT INTO user_vcard (owner_jid, fields, updated_at)"
            " VALUES (?, ?, UTC_TIMESTAMP(6)) ON DUPLICATE KEY UPDATE"
            " fields = VALUES(fields), updated_at = VALUES(updated_at)",
            p, 2, NULL) != 0)
    {
        return -1;
    }

    if (!ctx->avatar) {
        return 0;
    }

    /* section 3.2: the data first, then the metadata that names it */
    if (ngx_xmpp_avatar_sql_only(conn, r, &ngx_xmpp_avatar_data_node,
                                 &ctx->avatar_data) != 0
        || ngx_xmpp_avatar_sql_only(conn, r, &ngx_xmpp_avatar_meta_node,
                                    &ctx->payload) != 0)
    {
        return -1;
    }

    /* the metadata node's access model, and who is notified */
    if (ngx_xmpp_pep_sql_node(conn, r, &ctx->owner, &ctx->node, 0) != 0) {
        return -1;
    }

    return ngx_xmpp_pep_sql_subscribers(conn, r, &ctx->owner);
}


int
ngx_xmpp_avatar_run(struct st_mysql *conn, ngx_xmpp_db_req_t *r)
{
    ngx_str_t            p[1];
    ngx_xmpp_pep_ctx_t  *ctx = r->ctx;

    switch (ctx->op) {

    case NGX_XMPP_PEP_AVATAR_LOAD:
        return ngx_xmpp_avatar_sql_current(conn, r, 0);

    case NGX_XMPP_PEP_VCARD_GET:
        p[0] = ctx->owner;
        ctx->out.last = ctx->out.start;
        ctx->subs.last = ctx->subs.start;

        if (ngx_xmpp_db_select(conn, r,
                "SELECT fields FROM user_vcard WHERE owner_jid = ?", p, 1,
                ngx_xmpp_pep_payload_row) != 0)
        {
            return -1;
        }

        /* the directory's photo, if any, stays the vCard's */
        if (ngx_strlcasestrn(ctx->payload.data,
                             ctx->payload.data + ctx->payload.len,
                             (u_char *) "<PHOTO>", sizeof("<PHOTO>") - 2)
            != NULL)
        {
            return 0;
        }

        return ngx_xmpp_avatar_sql_current(conn, r, 1);

    default:
        return ngx_xmpp_avatar_run_set(conn, r);
    }
}


/* ---- on the event loop ---- */


/*
 * At resource binding (ngx_xmpp_stream.c): a user without a directory
 * photo gets their own avatar's hash before the bind result, so their
 * first presence already carries it (XEP-0398 section 4).  NGX_OK: the
 * result is sent when MariaDB answers (at most a second).
 */
ngx_int_t
ngx_xmpp_avatar_bind(ngx_xmpp_session_t *s, ngx_str_t *id)
{
    ngx_str_t          *in[8];
    ngx_xmpp_db_req_t  *r;

    if (s->photo_dir || id == NULL) {
        return NGX_DECLINED;
    }

    ngx_memzero(in, sizeof(in));
    in[0] = &s->jid.bare;
    in[1] = &ngx_xmpp_avatar_meta_node;
    in[6] = id;

    r = ngx_xmpp_pep_req(s, NULL, NGX_XMPP_PEP_AVATAR_LOAD, in);
    if (r == NULL) {
        return NGX_DECLINED;
    }

    r->timeout = NGX_XMPP_AVATAR_BIND_WAIT;
    r->readonly = 1;    /* one SELECT at each bind: no COMMIT */

    if (ngx_xmpp_db_post(r) != NGX_OK) {
        ngx_xmpp_db_destroy(r);
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/*
 * A vCard get of local (ngx_xmpp_vcard.c) with the directory's answer
 * in xml: the user's own fields (and avatar) are added from MariaDB.
 * NGX_DECLINED: answer with xml alone.
 */
ngx_int_t
ngx_xmpp_avatar_vcard_get(ngx_xmpp_session_t *s, u_char *id, size_t id_len,
    ngx_uint_t has_to, ngx_str_t *local, ngx_str_t *xml)
{
    u_char              *p;
    ngx_str_t            bare, iq_id, *in[8];
    ngx_xmpp_db_req_t   *r;
    ngx_xmpp_pep_ctx_t  *ctx;

    bare.len = local->len + 1 + s->conf->domain.len;
    bare.data = ngx_alloc(bare.len, s->connection->log);
    if (bare.data == NULL) {
        return NGX_DECLINED;
    }

    p = ngx_cpymem(bare.data, local->data, local->len);
    *p++ = '@';
    ngx_memcpy(p, s->conf->domain.data, s->conf->domain.len);

    iq_id.data = id;
    iq_id.len = id_len;

    ngx_memzero(in, sizeof(in));
    in[0] = &bare;
    in[1] = &ngx_xmpp_avatar_meta_node;
    in[3] = xml;
    in[6] = &iq_id;
    in[7] = has_to ? &bare : NULL;

    r = ngx_xmpp_pep_req(s, NULL, NGX_XMPP_PEP_VCARD_GET, in);

    ngx_free(bare.data);

    if (r == NULL) {
        return NGX_DECLINED;
    }

    ctx = r->ctx;
    ctx->out.max = s->conf->vcard_max_size + 64;
    ctx->subs.max = s->conf->pep_max_item_size + 64;

    if (ngx_xmpp_db_post(r) != NGX_OK) {
        ngx_xmpp_db_destroy(r);
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/* the stored avatar's <PHOTO/>; its TYPE from the image's first bytes */
static void
ngx_xmpp_avatar_photo(ngx_xmpp_wbuf_t *b, ngx_str_t *payload)
{
    u_char      *img;
    size_t       len, i, n;
    ngx_str_t    b64, head;
    const char  *type;

    ngx_xmpp_avatar_b64(payload, &b64);

    /* 24 base64 characters are 18 bytes, enough for every magic */
    for (i = 0, n = 0; i < b64.len && n < 24; i++) {
        if (b64.data[i] != ' ' && b64.data[i] != '\t'
            && b64.data[i] != '\r' && b64.data[i] != '\n')
        {
            n++;
        }
    }

    head.data = b64.data;
    head.len = i;

    img = ngx_xmpp_avatar_decode(&head, &len);
    if (img == NULL) {
        return;
    }

    type = cdir_photo_type(img, len);
    free(img);

    if (type == NULL) {
        return;
    }

    ngx_xmpp_wbuf_lit(b, "<PHOTO><TYPE>");
    ngx_xmpp_wbuf_str(b, type);
    ngx_xmpp_wbuf_lit(b, "</TYPE><BINVAL>");
    ngx_xmpp_wbuf_nstr(b, &b64);
    ngx_xmpp_wbuf_lit(b, "</BINVAL></PHOTO>");
}


static void
ngx_xmpp_avatar_vcard_done(ngx_xmpp_session_t *s, ngx_xmpp_db_req_t *r)
{
    u_char              *p;
    ngx_str_t            local, xml, fields, data;
    ngx_xmpp_wbuf_t      b;
    ngx_xmpp_pep_ctx_t  *ctx = r->ctx;

    p = ngx_strlchr(ctx->owner.data, ctx->owner.data + ctx->owner.len, '@');

    local.data = ctx->owner.data;
    local.len = p ? (size_t) (p - ctx->owner.data) : ctx->owner.len;
    xml = ctx->payload;

    if (r->rc != NGX_XMPP_DB_OK) {
        /* the directory's vCard is still the answer (docs) */
        ngx_log_error(NGX_LOG_WARN, s->connection->log, 0,
                      "xmpp: own vCard fields of \"%V\" not read (%ui): %s",
                      &local, r->rc, r->err);
        ngx_xmpp_vcard_reply(s, ctx->iq_id.data, ctx->iq_id.len,
                             ctx->iq_to.len, &local, 1, &xml);
        return;
    }

    ngx_memzero(&b, sizeof(ngx_xmpp_wbuf_t));
    b.max = xml.len + (ctx->out.last - ctx->out.start)
            + (ctx->subs.last - ctx->subs.start) + 1024;

    /* everything of the directory's but its "</vCard>" */
    if (xml.len > sizeof("</vCard>") - 1) {
        ngx_xmpp_wbuf_add(&b, xml.data, xml.len - (sizeof("</vCard>") - 1));
    }

    p = ctx->out.start;

    if (ngx_xmpp_pep_get(&p, ctx->out.last, &fields, 1) == NGX_OK) {
        ngx_xmpp_wbuf_nstr(&b, &fields);
    }

    p = ctx->subs.start;

    if (ngx_xmpp_pep_get(&p, ctx->subs.last, &data, 1) == NGX_OK) {
        ngx_xmpp_avatar_photo(&b, &data);
    }

    ngx_xmpp_wbuf_lit(&b, "</vCard>");

    if (!s->photo_dir && ctx->owner.len == s->jid.bare.len
        && ngx_strncmp(ctx->owner.data, s->jid.bare.data, ctx->owner.len)
           == 0)
    {
        /* one's own vCard: the hash of presence follows it */
        ngx_memcpy(s->photo_hash, ctx->avatar_hash, sizeof(s->photo_hash));
    }

    if (b.failed) {
        ngx_xmpp_vcard_reply(s, ctx->iq_id.data, ctx->iq_id.len,
                             ctx->iq_to.len, &local, 1, &xml);

    } else {
        xml.data = b.start;
        xml.len = b.last - b.start;
        ngx_xmpp_vcard_reply(s, ctx->iq_id.data, ctx->iq_id.len,
                             ctx->iq_to.len, &local, 1, &xml);
    }

    ngx_xmpp_wbuf_free(&b);
}


/* pep_done() for VCARD_GET and AVATAR_LOAD */
void
ngx_xmpp_avatar_done(ngx_xmpp_session_t *s, ngx_xmpp_db_req_t *r)
{
    ngx_xmpp_pep_ctx_t  *ctx = r->ctx;

    if (s == NULL) {
        return;
    }

    if (ctx->op == NGX_XMPP_PEP_VCARD_GET) {
        ngx_xmpp_avatar_vcard_done(s, r);
        return;
    }

    if (r->rc == NGX_XMPP_DB_OK && !s->photo_dir) {
        ngx_memcpy(s->photo_hash, ctx->avatar_hash, sizeof(s->photo_hash));

    } else if (r->rc != NGX_XMPP_DB_OK) {
        ngx_log_error(NGX_LOG_WARN, s->connection->log, 0,
                      "xmpp: avatar of %V not read (%ui): %s",
                      &ctx->owner, r->rc, r->err);
    }

    ngx_xmpp_stream_bind_result(s, &ctx->iq_id);
}


/* which directory field is a vCard element? CDIR_VC_N: none */
static ngx_uint_t
ngx_xmpp_avatar_field(ngx_xmpp_conf_t *xcf, ngx_str_t *name)
{
    static const struct {
        const char  *name;
        ngx_uint_t   one, two;
    } fields[] = {
        { "FN", CDIR_VC_FN, CDIR_VC_FN },
        { "N", CDIR_VC_GIVEN, CDIR_VC_FAMILY },
        { "NICKNAME", CDIR_VC_NICK, CDIR_VC_NICK },
        { "TITLE", CDIR_VC_TITLE, CDIR_VC_TITLE },
        { "ORG", CDIR_VC_ORG, CDIR_VC_UNIT },
        { "EMAIL", CDIR_VC_EMAIL, CDIR_VC_EMAIL },
        { "TEL", CDIR_VC_TEL, CDIR_VC_TEL },
        { NULL, 0, 0 }
    };

    ngx_uint_t  i;

    for (i = 0; fields[i].name; i++) {
        if (ngx_xmpp_pep_str_is(name, fields[i].name)) {
            return ngx_xmpp_avatar_mapped(xcf, fields[i].one)
                   || ngx_xmpp_avatar_mapped(xcf, fields[i].two);
        }
    }

    return 0;
}


/*
 * A vCard PHOTO set by a user without a directory photo: hash, the
 * data item (data) and the metadata item (meta) of XEP-0398 3.2; an
 * empty BINVAL removes the avatar (hash "").
 */
static ngx_int_t
ngx_xmpp_avatar_vcard_photo(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st,
    ngx_xmpp_node_t *photo, u_char *hash, ngx_xmpp_wbuf_t *data,
    ngx_xmpp_wbuf_t *meta)
{
    u_char           *img;
    size_t            len, max;
    ngx_str_t         text, src, dst;
    const char       *type;
    ngx_xmpp_node_t  *bin;

    hash[0] = '\0';
    ngx_str_null(&text);

    bin = ngx_xmpp_node_child(photo, "BINVAL", "vcard-temp");

    if (bin && ngx_xmpp_node_text(st->pool, bin, &text) != NGX_OK) {
        return NGX_ERROR;
    }

    img = text.len ? ngx_xmpp_avatar_decode(&text, &len) : NULL;

    if (img == NULL) {
        /* XEP-0084 4.6: an empty metadata item disables the avatar */
        ngx_xmpp_wbuf_lit(meta, "<metadata xmlns='" NGX_XMPP_NS_AVATAR_META
                          "'/>");
        return text.len ? NGX_DECLINED : NGX_OK;
    }

    /* the data item's base64 must fit one PEP item */
    max = s->conf->pep_max_item_size > 128
          ? ngx_min(s->conf->ldap_photo_max,
                    (s->conf->pep_max_item_size - 128) / 4 * 3)
          : 0;
    type = cdir_photo_type(img, len);

    if (len > max || type == NULL) {
        free(img);
        return NGX_DECLINED;
    }

    ngx_xmpp_avatar_sha1(img, len, hash);

    ngx_xmpp_wbuf_lit(data, "<data xmlns='" NGX_XMPP_NS_AVATAR_DATA "'>");
    src.data = img;
    src.len = len;

    if (ngx_xmpp_wbuf_reserve(data, ngx_base64_encoded_length(len))
        == NGX_OK)
    {
        dst.data = data->last;
        ngx_encode_base64(&dst, &src);
        data->last += dst.len;
    }

    ngx_xmpp_wbuf_lit(data, "</data>");

    ngx_xmpp_wbuf_lit(meta, "<metadata xmlns='" NGX_XMPP_NS_AVATAR_META
                      "'>");
    ngx_xmpp_avatar_info(meta, hash, img, len, type);
    ngx_xmpp_wbuf_lit(meta, "</metadata>");

    free(img);

    return NGX_OK;
}


/* copies a buffer into a heap string that the request frees */
static ngx_int_t
ngx_xmpp_avatar_keep_buf(ngx_str_t *dst, ngx_xmpp_wbuf_t *b, ngx_log_t *log)
{
    dst->len = b->last - b->start;
    dst->data = NULL;

    if (dst->len == 0) {
        return NGX_OK;
    }

    dst->data = ngx_alloc(dst->len, log);
    if (dst->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(dst->data, b->start, dst->len);

    return NGX_OK;
}


/* a vCard set's parts, kept until its request is posted */
typedef struct {
    ngx_xmpp_wbuf_t      fields;      /* the user's own elements */
    ngx_xmpp_wbuf_t      data;        /* XEP-0084 data item */
    ngx_xmpp_wbuf_t      meta;        /* XEP-0084 metadata item */
    u_char               hash[41];
    ngx_uint_t           photo;
} ngx_xmpp_avatar_vcard_t;


/*
 * XEP-0054 3.2: the elements of the vCard that are the user's own, and
 * its PHOTO as XEP-0398 3.2 items.  NGX_DECLINED: refused, answered.
 */
static ngx_int_t
ngx_xmpp_avatar_vcard_parse(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st,
    ngx_xmpp_avatar_vcard_t *vc)
{
    ngx_int_t         rc;
    ngx_xmpp_node_t  *v, *c;

    v = ngx_xmpp_node_first_element(st->node);

    for (c = v->child; c; c = c->next) {
        if (c->name.len == 0 || ngx_xmpp_pep_str_is(&c->name, "JABBERID")
            || ngx_xmpp_avatar_field(s->conf, &c->name))
        {
            continue;
        }

        if (!ngx_xmpp_pep_str_is(&c->name, "PHOTO")) {
            ngx_xmpp_serialize(&vc->fields, c, &v->ns);
            continue;
        }

        if (s->photo_dir || vc->photo) {
            continue;                      /* the directory's photo */
        }

        rc = ngx_xmpp_avatar_vcard_photo(s, st, c, vc->hash, &vc->data,
                                         &vc->meta);

        if (rc == NGX_DECLINED) {
            ngx_xmpp_pep_error(s, &st->id, NULL, "modify", "not-acceptable",
                               NULL, "the photo is not an image of a known "
                               "type (JPEG, PNG, GIF, WebP) within "
                               "conclave_ldap_photo_max and "
                               "conclave_pep_max_item_size");
            return NGX_DECLINED;
        }

        if (rc != NGX_OK) {
            return NGX_ERROR;
        }

        vc->photo = 1;
    }

    if (vc->fields.failed
        || (size_t) (vc->fields.last - vc->fields.start)
           > s->conf->vcard_max_size)
    {
        ngx_xmpp_pep_error(s, &st->id, NULL, "modify", "not-acceptable",
                           NULL, "the vCard's own fields exceed "
                           "conclave_vcard_max_size");
        return NGX_DECLINED;
    }

    return (vc->data.failed || vc->meta.failed) ? NGX_ERROR : NGX_OK;
}


/*
 * The set's transaction: the fields, and with a photo the avatar into
 * both XEP-0084 nodes (ngx_xmpp_avatar_run_set).  NGX_DECLINED:
 * answered already.
 */
static ngx_int_t
ngx_xmpp_avatar_vcard_post(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st,
    ngx_xmpp_avatar_vcard_t *vc)
{
    ngx_str_t           *in[8], id, meta;
    ngx_xmpp_db_req_t   *r;
    ngx_xmpp_pep_ctx_t  *ctx;

    ngx_memzero(in, sizeof(in));
    in[0] = &s->jid.bare;
    in[1] = &ngx_xmpp_avatar_meta_node;

    if (vc->photo) {
        /* XEP-0084 4.2: the item id is the hash ("current": none) */
        id.data = vc->hash[0] ? vc->hash : (u_char *) "current";
        id.len = ngx_strlen(id.data);
        meta.data = vc->meta.start;
        meta.len = vc->meta.last - vc->meta.start;
        in[2] = &id;
        in[3] = &meta;
    }

    if (s->conf->db_thread_pool == NULL) {
        /* no MariaDB for chat: nowhere to keep the fields */
        ngx_xmpp_router_error(s, st, "cancel", "service-unavailable");
        return NGX_DECLINED;
    }

    r = ngx_xmpp_pep_req(s, st, NGX_XMPP_PEP_VCARD_SET, in);
    if (r == NULL) {
        return NGX_DECLINED;               /* answered by pep_req */
    }

    ctx = r->ctx;
    ctx->avatar = vc->photo;
    ngx_memcpy(ctx->avatar_hash, vc->hash, sizeof(vc->hash));

    if (ngx_xmpp_avatar_keep_buf(&ctx->fields, &vc->fields,
                                 s->connection->log)
        != NGX_OK
        || ngx_xmpp_avatar_keep_buf(&ctx->avatar_data, &vc->data,
                                    s->connection->log)
           != NGX_OK)
    {
        ngx_xmpp_db_destroy(r);
        return NGX_ERROR;
    }

    if (ctx->fields.data == NULL) {
        /* no fields of one's own: "", not NULL (a NOT NULL column) */
        ctx->fields.data = ngx_alloc(1, s->connection->log);

        if (ctx->fields.data == NULL) {
            ngx_xmpp_db_destroy(r);
            return NGX_ERROR;
        }
    }

    ngx_xmpp_pep_post(s, r);

    return NGX_OK;
}


/*
 * XEP-0054 3.2 on one's own vCard: the fields the directory does not
 * map are stored; the directory's, and JABBERID, stay the server's.
 */
void
ngx_xmpp_avatar_vcard_set(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st)
{
    ngx_int_t                rc;
    ngx_xmpp_avatar_vcard_t  vc;

    ngx_memzero(&vc, sizeof(ngx_xmpp_avatar_vcard_t));
    vc.fields.max = s->conf->vcard_max_size + 1;
    vc.data.max = s->conf->pep_max_item_size;
    vc.meta.max = 1024;

    rc = ngx_xmpp_avatar_vcard_parse(s, st, &vc);

    if (rc == NGX_OK) {
        rc = ngx_xmpp_avatar_vcard_post(s, st, &vc);
    }

    if (rc == NGX_ERROR) {
        ngx_xmpp_router_error(s, st, "wait", "internal-server-error");
    }

    ngx_xmpp_wbuf_free(&vc.fields);
    ngx_xmpp_wbuf_free(&vc.data);
    ngx_xmpp_wbuf_free(&vc.meta);
}
