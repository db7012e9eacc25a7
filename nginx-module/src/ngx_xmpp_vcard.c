
/*
 * vCards and avatars from the directory: XEP-0054 (vcard-temp) and
 * XEP-0153 (vCard-based avatars).
 *
 * A vCard get to a user's bare JID of our domain (the user's own, or a
 * colleague's: XEP-0054 section 3.2) is answered by the server from
 * the directory entry behind that JID: FN, N, NICKNAME, TITLE, ORG,
 * EMAIL, TEL and PHOTO, each from a configurable attribute
 * (conclave_ldap_vcard_attribute; cdir_vcard.c has the defaults).  The
 * LDAP read runs in the thread pool; the answer is kept in a small
 * per-worker cache (conclave_ldap_vcard_cache_size bytes, entries live
 * conclave_ldap_vcard_cache_ttl), so a roster full of avatars costs one
 * directory read per contact and TTL.  A JID with no entry (or a
 * disabled one) is <item-not-found/> (XEP-0054 section 3.1); a
 * directory that does not answer, <remote-server-timeout/>.
 *
 * The directory owns the vCard: a vCard set is <not-allowed/> (RFC 6120
 * 8.3.3.10: no entity may do this), and one to another user's JID is
 * <forbidden/>.  Photos larger than conclave_ldap_photo_max, or that are
 * not an image of a type we recognise, are left out with a log line.
 *
 * XEP-0153: the photo is read with the sign-in search and its SHA-1 kept
 * in the session; every available presence the user sends gets the
 * server's <x xmlns='vcard-temp:x:update'><photo>hash</photo></x>
 * instead of the client's own (an empty <photo/>: no photo), so that
 * contacts always see the directory's avatar.
 */


#include "ngx_xmpp.h"


#define NGX_XMPP_NS_VCARD         "vcard-temp"
#define NGX_XMPP_NS_VCARD_UPDATE  "vcard-temp:x:update"
#define NGX_XMPP_VCARD_MAX_ENTRIES  4096


typedef struct {
    uint64_t               sid;
    ngx_xmpp_conf_t       *conf;
    cdir_t                *dir;
    ngx_str_t              domain;
    ngx_int_t              rc;           /* 1 found, 0 none, -1 failed */
    ngx_xmpp_wbuf_t        xml;          /* <vCard/>, built in the task */
    size_t                 photo_dropped;
    const char            *photo_why;
    char                   hash[41];
    char                   err[256];
    char                   dn[CDIR_MAX_DN_SIZE];
    char                   local[CDIR_MAX_LOGIN + 1];
    u_char                 id[256];
    size_t                 id_len;
    unsigned               has_to:1;
} ngx_xmpp_vcard_task_t;


typedef struct {
    ngx_queue_t            queue;        /* most recently used first */
    time_t                 expires;
    size_t                 size;
    ngx_uint_t             found;
    ngx_str_t              local;
    ngx_str_t              xml;
} ngx_xmpp_vcard_entry_t;


static void ngx_xmpp_vcard_start(ngx_xmpp_session_t *s,
    ngx_xmpp_stanza_t *st, ngx_str_t *local);
static void ngx_xmpp_vcard_thread(void *data, ngx_log_t *log);
static void ngx_xmpp_vcard_build(ngx_xmpp_vcard_task_t *t, cdir_vcard_t *vc);
static void ngx_xmpp_vcard_done(ngx_event_t *ev);
static void ngx_xmpp_vcard_answer(ngx_xmpp_session_t *s, u_char *id,
    size_t id_len, ngx_uint_t has_to, ngx_str_t *local, ngx_int_t rc,
    ngx_str_t *xml);
static ngx_xmpp_vcard_entry_t *ngx_xmpp_vcard_cached(ngx_str_t *local);
static void ngx_xmpp_vcard_cache_put(ngx_xmpp_conf_t *xcf,
    ngx_str_t *local, ngx_uint_t found, ngx_str_t *xml);
static void ngx_xmpp_vcard_evict(ngx_xmpp_vcard_entry_t *e);


static ngx_queue_t  ngx_xmpp_vcard_lru;
static ngx_uint_t   ngx_xmpp_vcard_inited;
static ngx_uint_t   ngx_xmpp_vcard_entries;
static size_t       ngx_xmpp_vcard_used;


/* conclave_ldap_vcard_attribute FIELD attribute|none */
char *
ngx_xmpp_vcard_attr(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_xmpp_conf_t  *xcf = conf;

    u_char       c;
    ngx_str_t   *value;
    ngx_uint_t   i, j;

    value = cf->args->elts;

    for (i = 0; i < CDIR_VC_N; i++) {
        if (value[1].len == ngx_strlen(cdir_vcard_names[i])
            && ngx_strncasecmp(value[1].data,
                               (u_char *) cdir_vcard_names[i],
                               value[1].len)
               == 0)
        {
            break;
        }
    }

    if (i == CDIR_VC_N) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "unknown vCard field \"%V\": FN, GIVEN, FAMILY, "
                           "NICKNAME, TITLE, ORGNAME, ORGUNIT, EMAIL, TEL "
                           "or PHOTO", &value[1]);
        return NGX_CONF_ERROR;
    }

    if (value[2].len == 4 && ngx_strncmp(value[2].data, "none", 4) == 0) {
        ngx_str_set(&xcf->ldap_vcard_attr[i], "");
        return NGX_CONF_OK;
    }

    /* an attribute description (RFC 4512 2.5), nothing a filter sees */
    for (j = 0; j < value[2].len; j++) {
        c = value[2].data[j];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
              || (c >= '0' && c <= '9') || c == '-'
              || c == ';'))
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid vCard attribute \"%V\"", &value[2]);
            return NGX_CONF_ERROR;
        }
    }

    xcf->ldap_vcard_attr[i] = value[2];

    return NGX_CONF_OK;
}


char *
ngx_xmpp_vcard_conf(ngx_conf_t *cf, ngx_xmpp_conf_t *xcf)
{
    size_t  fits;

    ngx_conf_init_size_value(xcf->ldap_vcard_cache_size, 4 * 1024 * 1024);
    ngx_conf_init_value(xcf->ldap_vcard_cache_ttl, 60);

    /* the answer, base64 and all, must fit the client's output queue */
    fits = xcf->max_output > 16384 ? (xcf->max_output - 16384) / 4 * 3 : 0;

    if (xcf->ldap_photo_max == NGX_CONF_UNSET_SIZE) {
        /*
         * Unset, the default shrinks to what a small conclave_max_output
         * can carry; below 16k there is no room for a photo at all, and
         * a limit of one byte leaves every photo out.
         */
        xcf->ldap_photo_max = ngx_max(ngx_min(CDIR_PHOTO_MAX, fits), 1);

        return NGX_CONF_OK;
    }

    if (xcf->ldap_photo_max == 0 || xcf->ldap_photo_max > fits) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"conclave_ldap_photo_max\" must be at least 1 "
                           "and its base64 must fit "
                           "\"conclave_max_output\"");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


void
ngx_xmpp_vcard_exit_worker(void)
{
    ngx_queue_t  *q;

    if (!ngx_xmpp_vcard_inited) {
        return;
    }

    while (!ngx_queue_empty(&ngx_xmpp_vcard_lru)) {
        q = ngx_queue_last(&ngx_xmpp_vcard_lru);
        ngx_xmpp_vcard_evict(ngx_queue_data(q, ngx_xmpp_vcard_entry_t,
                                            queue));
    }
}


ngx_uint_t
ngx_xmpp_vcard_is(ngx_xmpp_stanza_t *st)
{
    ngx_xmpp_node_t  *q;

    q = ngx_xmpp_node_first_element(st->node);

    return q != NULL && q->name.len == 5
           && ngx_strncmp(q->name.data, "vCard", 5) == 0
           && q->ns.len == sizeof(NGX_XMPP_NS_VCARD) - 1
           && ngx_strncmp(q->ns.data, NGX_XMPP_NS_VCARD, q->ns.len) == 0;
}


void
ngx_xmpp_vcard_iq(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st)
{
    u_char                  *p;
    ngx_str_t                local;
    ngx_uint_t               own, get;
    ngx_xmpp_vcard_entry_t  *e;

    get = (st->type.len == 3 && ngx_strncmp(st->type.data, "get", 3) == 0);

    if (!get
        && !(st->type.len == 3 && ngx_strncmp(st->type.data, "set", 3) == 0))
    {
        return;                            /* results and errors end here */
    }

    local = st->has_to ? st->to.local : s->jid.local;
    own = (local.len == s->jid.local.len
           && ngx_strncasecmp(local.data, s->jid.local.data, local.len)
              == 0);

    if (!get && !own) {
        ngx_xmpp_router_error(s, st, "auth", "forbidden");
        return;
    }

    if (!get) {
        /* the fields the directory does not hold (ngx_xmpp_avatar.c) */
        ngx_xmpp_avatar_vcard_set(s, st);
        return;
    }

    if (local.len == 0 || local.len > CDIR_MAX_LOGIN
        || !ngx_xmpp_jid_local_valid(local.data, local.len))
    {
        ngx_xmpp_router_error(s, st, "cancel", "item-not-found");
        return;
    }

    p = ngx_pnalloc(st->pool, local.len);
    if (p == NULL) {
        ngx_xmpp_router_error(s, st, "wait", "internal-server-error");
        return;
    }

    ngx_memcpy(p, local.data, local.len);
    ngx_xmpp_ascii_lower(p, local.len);
    local.data = p;

    e = ngx_xmpp_vcard_cached(&local);

    if (e != NULL) {
        ngx_xmpp_vcard_answer(s, st->id.data, st->id.len, st->has_to,
                              &local, e->found, &e->xml);
        return;
    }

    ngx_xmpp_vcard_start(s, st, &local);
}


static void
ngx_xmpp_vcard_start(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st,
    ngx_str_t *local)
{
    ngx_thread_task_t      *task;
    ngx_xmpp_vcard_task_t  *t;

    if (s->conf->dir == NULL || s->conf->thread_pool == NULL
        || st->id.len > sizeof(t->id))
    {
        ngx_xmpp_router_error(s, st, "cancel", "service-unavailable");
        return;
    }

    /* on the heap: the session may end before the directory answers */
    task = ngx_calloc(sizeof(ngx_thread_task_t)
                      + sizeof(ngx_xmpp_vcard_task_t), s->connection->log);
    if (task == NULL) {
        ngx_xmpp_router_error(s, st, "wait", "internal-server-error");
        return;
    }

    t = (ngx_xmpp_vcard_task_t *) (task + 1);

    t->sid = s->id;
    t->conf = s->conf;
    t->dir = s->conf->dir;
    t->domain = s->conf->domain;
    t->xml.max = s->conf->ldap_photo_max / 3 * 4 + 16384;
    t->has_to = st->has_to;
    ngx_memcpy(t->local, local->data, local->len);
    ngx_memcpy(t->id, st->id.data, st->id.len);
    t->id_len = st->id.len;

    /* the user's own entry is known: a base search on its DN */
    if (local->len == s->user.len
        && ngx_strncmp(local->data, s->user.data, local->len) == 0
        && s->ldap_dn.len && s->ldap_dn.len < sizeof(t->dn))
    {
        ngx_memcpy(t->dn, s->ldap_dn.data, s->ldap_dn.len);
    }

    task->ctx = t;
    task->handler = ngx_xmpp_vcard_thread;
    task->event.handler = ngx_xmpp_vcard_done;
    task->event.data = task;
    task->event.log = ngx_cycle->log;

    if (ngx_thread_task_post(s->conf->thread_pool, task) != NGX_OK) {
        ngx_free(task);
        ngx_xmpp_router_error(s, st, "wait", "resource-constraint");
    }
}


/* in a pool thread: read the entry, build the <vCard/> */
static void
ngx_xmpp_vcard_thread(void *data, ngx_log_t *log)
{
    ngx_xmpp_vcard_task_t  *t = data;

    cdir_vcard_t  vc;

    t->rc = cdir_vcard(t->dir, t->dn, t->local, &vc, t->err,
                       sizeof(t->err));

    if (t->rc != 1) {
        return;
    }

    t->photo_dropped = vc.photo_dropped;
    t->photo_why = vc.photo_why;
    ngx_memcpy(t->hash, vc.photo_hash, sizeof(t->hash));

    ngx_xmpp_vcard_build(t, &vc);

    cdir_vcard_free(&vc);
}


#define ngx_xmpp_vcard_put(b, vc, i, tag)                                    \
    if ((vc)->value[i]) {                                                    \
        ngx_xmpp_wbuf_lit(b, "<" tag ">");                                   \
        ngx_xmpp_wbuf_esc(b, (u_char *) (vc)->value[i],                      \
                          ngx_strlen((vc)->value[i]));                       \
        ngx_xmpp_wbuf_lit(b, "</" tag ">");                                  \
    }


/* XEP-0054 section 3.1, in the order of its DTD */
static void
ngx_xmpp_vcard_build(ngx_xmpp_vcard_task_t *t, cdir_vcard_t *vc)
{
    ngx_str_t         src, dst;
    ngx_xmpp_wbuf_t  *b;

    b = &t->xml;

    ngx_xmpp_wbuf_lit(b, "<vCard xmlns='" NGX_XMPP_NS_VCARD "'>");
    ngx_xmpp_vcard_put(b, vc, CDIR_VC_FN, "FN");

    if (vc->value[CDIR_VC_GIVEN] || vc->value[CDIR_VC_FAMILY]) {
        ngx_xmpp_wbuf_lit(b, "<N>");
        ngx_xmpp_vcard_put(b, vc, CDIR_VC_FAMILY, "FAMILY");
        ngx_xmpp_vcard_put(b, vc, CDIR_VC_GIVEN, "GIVEN");
        ngx_xmpp_wbuf_lit(b, "</N>");
    }

    ngx_xmpp_vcard_put(b, vc, CDIR_VC_NICK, "NICKNAME");

    if (vc->photo) {
        ngx_xmpp_wbuf_lit(b, "<PHOTO><TYPE>");
        ngx_xmpp_wbuf_str(b, vc->photo_type);
        ngx_xmpp_wbuf_lit(b, "</TYPE><BINVAL>");

        src.data = vc->photo;
        src.len = vc->photo_len;

        if (ngx_xmpp_wbuf_reserve(b, ngx_base64_encoded_length(src.len))
            == NGX_OK)
        {
            dst.data = b->last;
            ngx_encode_base64(&dst, &src);
            b->last += dst.len;
        }

        ngx_xmpp_wbuf_lit(b, "</BINVAL></PHOTO>");
    }

    if (vc->value[CDIR_VC_TEL]) {
        ngx_xmpp_wbuf_lit(b, "<TEL><WORK/><VOICE/>");
        ngx_xmpp_vcard_put(b, vc, CDIR_VC_TEL, "NUMBER");
        ngx_xmpp_wbuf_lit(b, "</TEL>");
    }

    if (vc->value[CDIR_VC_EMAIL]) {
        ngx_xmpp_wbuf_lit(b, "<EMAIL><INTERNET/><PREF/>");
        ngx_xmpp_vcard_put(b, vc, CDIR_VC_EMAIL, "USERID");
        ngx_xmpp_wbuf_lit(b, "</EMAIL>");
    }

    ngx_xmpp_wbuf_lit(b, "<JABBERID>");
    ngx_xmpp_wbuf_str(b, t->local);
    ngx_xmpp_wbuf_lit(b, "@");
    ngx_xmpp_wbuf_escs(b, &t->domain);
    ngx_xmpp_wbuf_lit(b, "</JABBERID>");

    ngx_xmpp_vcard_put(b, vc, CDIR_VC_TITLE, "TITLE");

    if (vc->value[CDIR_VC_ORG] || vc->value[CDIR_VC_UNIT]) {
        /* ORGNAME is required in ORG (the DTD): empty if unknown */
        ngx_xmpp_wbuf_lit(b, "<ORG>");

        if (vc->value[CDIR_VC_ORG]) {
            ngx_xmpp_vcard_put(b, vc, CDIR_VC_ORG, "ORGNAME");

        } else {
            ngx_xmpp_wbuf_lit(b, "<ORGNAME/>");
        }

        ngx_xmpp_vcard_put(b, vc, CDIR_VC_UNIT, "ORGUNIT");
        ngx_xmpp_wbuf_lit(b, "</ORG>");
    }

    ngx_xmpp_wbuf_lit(b, "</vCard>");
}


static void
ngx_xmpp_vcard_done(ngx_event_t *ev)
{
    ngx_thread_task_t  *task = ev->data;

    ngx_str_t               local, xml;
    ngx_xmpp_session_t     *s;
    ngx_xmpp_vcard_task_t  *t;

    t = task->ctx;
    s = ngx_xmpp_session_find(t->sid);

    local.data = (u_char *) t->local;
    local.len = ngx_strlen(t->local);
    xml.data = t->xml.start;
    xml.len = t->xml.last - t->xml.start;

    if (t->rc == 1 && t->xml.failed) {
        ngx_cpystrn((u_char *) t->err, (u_char *) "vCard too large",
                    sizeof(t->err));
        t->rc = -1;
    }

    if (t->photo_dropped) {
        ngx_log_error(NGX_LOG_NOTICE, ev->log, 0,
                      "xmpp: photo of \"%V\" left out of the vCard: "
                      "%uz bytes, %s", &local, t->photo_dropped,
                      t->photo_why);
    }

    if (t->rc >= 0) {
        ngx_xmpp_vcard_cache_put(t->conf, &local, (ngx_uint_t) t->rc, &xml);
    }

    if (s && !s->finalized && s->state == NGX_XMPP_ST_SESSION) {
        if (t->rc < 0) {
            ngx_log_error(NGX_LOG_WARN, s->connection->log, 0,
                          "xmpp: vCard of \"%V\" not read: %s", &local,
                          t->err);

        } else if (t->rc == 1 && s->user.len == local.len
                   && ngx_strncmp(s->user.data, local.data, local.len) == 0
                   && (t->hash[0] || s->photo_dir))
        {
            /*
             * The directory's photo may have changed since sign-in; a
             * user without one keeps the avatar of their own.
             */
            ngx_memcpy(s->photo_hash, t->hash, sizeof(s->photo_hash));
            s->photo_dir = (t->hash[0] != '\0');
        }

        ngx_xmpp_vcard_answer(s, t->id, t->id_len, t->has_to, &local,
                              t->rc, &xml);
    }

    ngx_xmpp_wbuf_free(&t->xml);
    ngx_free(task);
}


/* the directory's vCard with what the user set (ngx_xmpp_avatar.c) */
static void
ngx_xmpp_vcard_answer(ngx_xmpp_session_t *s, u_char *id, size_t id_len,
    ngx_uint_t has_to, ngx_str_t *local, ngx_int_t rc, ngx_str_t *xml)
{
    if (rc == 1
        && ngx_xmpp_avatar_vcard_get(s, id, id_len, has_to, local, xml)
           == NGX_OK)
    {
        return;
    }

    ngx_xmpp_vcard_reply(s, id, id_len, has_to, local, rc, xml);
}


void
ngx_xmpp_vcard_reply(ngx_xmpp_session_t *s, u_char *id, size_t id_len,
    ngx_uint_t has_to, ngx_str_t *local, ngx_int_t rc, ngx_str_t *xml)
{
    ngx_xmpp_wbuf_t  *b;

    b = ngx_xmpp_wbuf_scratch(xml->len + 4096);

    ngx_xmpp_wbuf_lit(b, "<iq xmlns='" NGX_XMPP_NS_CLIENT "'");

    if (has_to) {
        ngx_xmpp_wbuf_lit(b, " from='");
        ngx_xmpp_wbuf_escs(b, local);
        ngx_xmpp_wbuf_lit(b, "@");
        ngx_xmpp_wbuf_escs(b, &s->conf->domain);
        ngx_xmpp_wbuf_lit(b, "'");
    }

    ngx_xmpp_wbuf_lit(b, " to='");
    ngx_xmpp_wbuf_escs(b, &s->jid.full);
    ngx_xmpp_wbuf_lit(b, "' id='");
    ngx_xmpp_wbuf_esc(b, id, id_len);

    switch (rc) {

    case 1:
        ngx_xmpp_wbuf_lit(b, "' type='result'>");
        ngx_xmpp_wbuf_add(b, xml->data, xml->len);
        ngx_xmpp_wbuf_lit(b, "</iq>");
        break;

    case 0:
        ngx_xmpp_wbuf_lit(b, "' type='error'><error type='cancel'>"
                          "<item-not-found xmlns='" NGX_XMPP_NS_STANZAS
                          "'/></error></iq>");
        break;

    default:
        ngx_xmpp_wbuf_lit(b, "' type='error'><error type='wait'>"
                          "<remote-server-timeout xmlns='"
                          NGX_XMPP_NS_STANZAS "'/></error></iq>");
    }

    (void) ngx_xmpp_session_send_wbuf(s, b);
}


/*
 * XEP-0153 section 4.3: the server replaces whatever update element the
 * client put in its presence with the hash of the directory's photo.
 */
void
ngx_xmpp_vcard_presence(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st)
{
    size_t            len;
    ngx_xmpp_node_t  *n, *prev, *next, *x, *photo, *text;

    if (s->conf->dir == NULL || s->ldap_dn.len == 0) {
        return;                            /* not a directory user */
    }

    prev = NULL;

    for (n = st->node->child; n; n = next) {
        next = n->next;

        if (n->name.len == 1 && n->name.data[0] == 'x'
            && n->ns.len == sizeof(NGX_XMPP_NS_VCARD_UPDATE) - 1
            && ngx_strncmp(n->ns.data, NGX_XMPP_NS_VCARD_UPDATE, n->ns.len)
               == 0)
        {
            if (prev) {
                prev->next = next;

            } else {
                st->node->child = next;
            }

            if (st->node->last == n) {
                st->node->last = prev;
            }

            continue;
        }

        prev = n;
    }

    x = ngx_pcalloc(st->pool, 3 * sizeof(ngx_xmpp_node_t));
    if (x == NULL) {
        return;
    }

    photo = x + 1;
    text = x + 2;

    ngx_str_set(&x->name, "x");
    ngx_str_set(&x->ns, NGX_XMPP_NS_VCARD_UPDATE);
    x->parent = st->node;
    x->child = photo;
    x->last = photo;

    ngx_str_set(&photo->name, "photo");
    ngx_str_set(&photo->ns, NGX_XMPP_NS_VCARD_UPDATE);
    photo->parent = x;

    len = ngx_strlen(s->photo_hash);

    if (len) {
        /* an empty <photo/> says "no photo" (section 4.1) */
        text->text.data = s->photo_hash;
        text->text.len = len;
        text->parent = photo;
        photo->child = text;
        photo->last = text;
    }

    if (st->node->last) {
        st->node->last->next = x;

    } else {
        st->node->child = x;
    }

    st->node->last = x;
}


/* -- the per-worker cache ------------------------------------------------ */

static ngx_xmpp_vcard_entry_t *
ngx_xmpp_vcard_cached(ngx_str_t *local)
{
    ngx_queue_t             *q;
    ngx_xmpp_vcard_entry_t  *e;

    if (!ngx_xmpp_vcard_inited) {
        return NULL;
    }

    for (q = ngx_queue_head(&ngx_xmpp_vcard_lru);
         q != ngx_queue_sentinel(&ngx_xmpp_vcard_lru);
         q = ngx_queue_next(q))
    {
        e = ngx_queue_data(q, ngx_xmpp_vcard_entry_t, queue);

        if (e->local.len != local->len
            || ngx_strncmp(e->local.data, local->data, local->len) != 0)
        {
            continue;
        }

        if (e->expires <= ngx_time()) {
            ngx_xmpp_vcard_evict(e);
            return NULL;
        }

        ngx_queue_remove(q);
        ngx_queue_insert_head(&ngx_xmpp_vcard_lru, q);

        return e;
    }

    return NULL;
}


static void
ngx_xmpp_vcard_cache_put(ngx_xmpp_conf_t *xcf, ngx_str_t *local,
    ngx_uint_t found, ngx_str_t *xml)
{
    size_t                   size;
    ngx_queue_t             *q;
    ngx_xmpp_vcard_entry_t  *e;

    size = sizeof(ngx_xmpp_vcard_entry_t) + local->len + xml->len;

    if (xcf->ldap_vcard_cache_ttl <= 0
        || size > xcf->ldap_vcard_cache_size)
    {
        return;
    }

    if (!ngx_xmpp_vcard_inited) {
        ngx_queue_init(&ngx_xmpp_vcard_lru);
        ngx_xmpp_vcard_inited = 1;
    }

    e = ngx_xmpp_vcard_cached(local);
    if (e != NULL) {
        ngx_xmpp_vcard_evict(e);
    }

    /* least recently used first, until the new entry fits */
    while (!ngx_queue_empty(&ngx_xmpp_vcard_lru)
           && (ngx_xmpp_vcard_used + size > xcf->ldap_vcard_cache_size
               || ngx_xmpp_vcard_entries >= NGX_XMPP_VCARD_MAX_ENTRIES))
    {
        q = ngx_queue_last(&ngx_xmpp_vcard_lru);
        ngx_xmpp_vcard_evict(ngx_queue_data(q, ngx_xmpp_vcard_entry_t,
                                            queue));
    }

    e = ngx_alloc(size, ngx_cycle->log);
    if (e == NULL) {
        return;
    }

    e->expires = ngx_time() + xcf->ldap_vcard_cache_ttl;
    e->size = size;
    e->found = found;
    e->local.data = (u_char *) (e + 1);
    e->local.len = local->len;
    e->xml.data = e->local.data + local->len;
    e->xml.len = xml->len;
    ngx_memcpy(e->local.data, local->data, local->len);

    if (xml->len) {
        ngx_memcpy(e->xml.data, xml->data, xml->len);
    }

    ngx_queue_insert_head(&ngx_xmpp_vcard_lru, &e->queue);
    ngx_xmpp_vcard_used += size;
    ngx_xmpp_vcard_entries++;
}


static void
ngx_xmpp_vcard_evict(ngx_xmpp_vcard_entry_t *e)
{
    ngx_queue_remove(&e->queue);
    ngx_xmpp_vcard_used -= e->size;
    ngx_xmpp_vcard_entries--;
    ngx_free(e);
}
