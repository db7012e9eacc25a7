
/*
 * Group chat (XEP-0045), what owners and admins do: the room
 * configuration form (section 10.2, XEP-0004), affiliations and roles
 * (sections 8 and 9: kick, ban, voice, member lists), destruction
 * (10.9), mediated invitations (7.8.2), discovery of the service and of
 * rooms (6).  Persistent rooms in MariaDB are ngx_xmpp_mucdb.c.
 */


#include "ngx_xmpp_muc.h"

#include "caud.h"


#define NGX_XMPP_MUC_ITEMS_MAX   200


void
ngx_xmpp_muc_config_default(ngx_xmpp_muc_config_t *c)
{
    ngx_memzero(c, sizeof(ngx_xmpp_muc_config_t));

    /* Prosody's and ejabberd's defaults: open, public, semi-anonymous */
    c->semi_anonymous = 1;
    c->public = 1;
    c->max_users = ngx_xmpp_muc_conf->muc_max_occupants;
}


/* ------------------------------------------------------------------ */
/* the configuration form (XEP-0045 10.2, XEP-0004) */

static void
ngx_xmpp_muc_field(ngx_xmpp_wbuf_t *b, const char *var, const char *type,
    const char *label, ngx_str_t *value)
{
    ngx_xmpp_wbuf_lit(b, "<field var='");
    ngx_xmpp_wbuf_str(b, var);
    ngx_xmpp_wbuf_lit(b, "' type='");
    ngx_xmpp_wbuf_str(b, type);
    ngx_xmpp_wbuf_lit(b, "' label='");
    ngx_xmpp_wbuf_str(b, label);
    ngx_xmpp_wbuf_lit(b, "'><value>");
    ngx_xmpp_wbuf_escs(b, value);
    ngx_xmpp_wbuf_lit(b, "</value></field>");
}


static void
ngx_xmpp_muc_bool(ngx_xmpp_wbuf_t *b, const char *var, const char *label,
    ngx_uint_t on)
{
    ngx_str_t  v;

    v.data = (u_char *) (on ? "1" : "0");
    v.len = 1;

    ngx_xmpp_muc_field(b, var, "boolean", label, &v);
}


static void
ngx_xmpp_muc_form(ngx_xmpp_muc_room_t *room, ngx_xmpp_wbuf_t *b)
{
    u_char      num[NGX_INT_T_LEN];
    ngx_str_t   v;

    ngx_xmpp_wbuf_lit(b, "<query xmlns='" NGX_XMPP_NS_MUC_OWNER "'>"
                      "<x xmlns='" NGX_XMPP_NS_XDATA "' type='form'>"
                      "<title>Room configuration</title>"
                      "<field var='FORM_TYPE' type='hidden'><value>"
                      NGX_XMPP_NS_MUC_CONFIG "</value></field>");

    ngx_xmpp_muc_field(b, "muc#roomconfig_roomname", "text-single",
                       "Name", &room->conf.name);
    ngx_xmpp_muc_field(b, "muc#roomconfig_roomdesc", "text-single",
                       "Description", &room->conf.desc);
    ngx_xmpp_muc_bool(b, "muc#roomconfig_persistentroom", "Persistent",
                      room->conf.persistent);
    ngx_xmpp_muc_bool(b, "muc#roomconfig_publicroom", "Listed",
                      room->conf.public);
    ngx_xmpp_muc_bool(b, "muc#roomconfig_membersonly", "Members only",
                      room->conf.members_only);
    ngx_xmpp_muc_bool(b, "muc#roomconfig_moderatedroom", "Moderated",
                      room->conf.moderated);
    ngx_xmpp_muc_bool(b, "muc#roomconfig_changesubject",
                      "Occupants may change the subject",
                      room->conf.change_subject);
    ngx_xmpp_muc_bool(b, "muc#roomconfig_allowinvites",
                      "Occupants may invite", room->conf.allow_invites);
    ngx_xmpp_muc_bool(b, "muc#roomconfig_passwordprotectedroom",
                      "Password protected", room->conf.password.len != 0);

    /* the secret itself is never sent back */
    ngx_str_null(&v);
    ngx_xmpp_muc_field(b, "muc#roomconfig_roomsecret", "text-private",
                       "Password", &v);

    v.data = (u_char *) (room->conf.semi_anonymous ? "moderators"
                                                   : "anyone");
    v.len = ngx_strlen(v.data);
    ngx_xmpp_wbuf_lit(b, "<field var='muc#roomconfig_whois' "
                      "type='list-single' label='Who may see real JIDs'>"
                      "<option label='Moderators'><value>moderators</value>"
                      "</option><option label='Anyone'><value>anyone"
                      "</value></option><value>");
    ngx_xmpp_wbuf_nstr(b, &v);
    ngx_xmpp_wbuf_lit(b, "</value></field>");

    v.data = num;
    v.len = ngx_sprintf(num, "%ui", room->conf.max_users) - num;
    ngx_xmpp_muc_field(b, "muc#roomconfig_maxusers", "text-single",
                       "Maximum occupants", &v);

    ngx_xmpp_wbuf_lit(b, "</x></query>");
}


static ngx_int_t
ngx_xmpp_muc_parse_bool(ngx_str_t *v)
{
    if (v->len == 1 && (v->data[0] == '1' || v->data[0] == '0')) {
        return v->data[0] == '1';
    }

    if (v->len == 4 && ngx_strncmp(v->data, "true", 4) == 0) {
        return 1;
    }

    if (v->len == 5 && ngx_strncmp(v->data, "false", 5) == 0) {
        return 0;
    }

    return NGX_ERROR;
}


/* replaces the heap copy dst with one of src (configuration strings) */
ngx_int_t
ngx_xmpp_muc_dup(ngx_str_t *dst, ngx_str_t *src)
{
    u_char  *p;

    p = NULL;

    if (src->len) {
        p = ngx_alloc(src->len, ngx_cycle->log);
        if (p == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(p, src->data, src->len);
    }

    ngx_free(dst->data);
    dst->data = p;
    dst->len = src->len;

    return NGX_OK;
}


/*
 * One submitted field into c (a copy of the configuration): unknown
 * fields are ignored (XEP-0004 3.3), malformed values are refused.
 */
static ngx_int_t
ngx_xmpp_muc_form_field(ngx_xmpp_muc_req_t *rq, ngx_xmpp_muc_config_t *c,
    ngx_str_t *var, ngx_str_t *v, json_t *changes)
{
    ngx_int_t   n, on;
    ngx_uint_t  i;

    static const struct {
        const char  *var;
        size_t       off;
    } bools[] = {
        { "muc#roomconfig_persistentroom", 0 },
        { "muc#roomconfig_publicroom", 1 },
        { "muc#roomconfig_membersonly", 2 },
        { "muc#roomconfig_moderatedroom", 3 },
        { "muc#roomconfig_changesubject", 4 },
        { "muc#roomconfig_allowinvites", 5 },
        { "muc#roomconfig_passwordprotectedroom", 6 },
    };

#define ngx_xmpp_muc_var_is(lit)                                           \
    (var->len == sizeof(lit) - 1 && ngx_strncmp(var->data, lit, var->len) == 0)

    if (v->len > NGX_XMPP_MUC_FIELD_MAX) {
        return NGX_ERROR;
    }

    if (ngx_xmpp_muc_var_is("FORM_TYPE")) {
        return (v->len == sizeof(NGX_XMPP_NS_MUC_CONFIG) - 1
                && ngx_strncmp(v->data, NGX_XMPP_NS_MUC_CONFIG, v->len) == 0)
               ? NGX_OK : NGX_ERROR;
    }

    if (ngx_xmpp_muc_var_is("muc#roomconfig_roomsecret")) {
        /* never on the record: it is a password */
        return ngx_xmpp_muc_dup(&c->password, v);
    }

    if (changes && json_object_set_new(changes, (char *) var->data,
                                       json_stringn((char *) v->data,
                                                    v->len))
                   != 0)
    {
        return NGX_ERROR;
    }

    if (ngx_xmpp_muc_var_is("muc#roomconfig_roomname")) {
        return ngx_xmpp_muc_dup(&c->name, v);
    }

    if (ngx_xmpp_muc_var_is("muc#roomconfig_roomdesc")) {
        return ngx_xmpp_muc_dup(&c->desc, v);
    }

    if (ngx_xmpp_muc_var_is("muc#roomconfig_whois")) {
        if (v->len == 10 && ngx_strncmp(v->data, "moderators", 10) == 0) {
            c->semi_anonymous = 1;
            return NGX_OK;
        }

        if (v->len == 6 && ngx_strncmp(v->data, "anyone", 6) == 0) {
            c->semi_anonymous = 0;
            return NGX_OK;
        }

        return NGX_ERROR;
    }

    if (ngx_xmpp_muc_var_is("muc#roomconfig_maxusers")) {
        n = ngx_atoi(v->data, v->len);

        if (n == NGX_ERROR || n == 0
            || (ngx_uint_t) n > ngx_xmpp_muc_conf->muc_max_occupants)
        {
            return NGX_ERROR;
        }

        c->max_users = n;
        return NGX_OK;
    }

    for (i = 0; i < sizeof(bools) / sizeof(bools[0]); i++) {
        if (var->len != ngx_strlen(bools[i].var)
            || ngx_strncmp(var->data, bools[i].var, var->len) != 0)
        {
            continue;
        }

        on = ngx_xmpp_muc_parse_bool(v);
        if (on == NGX_ERROR) {
            return NGX_ERROR;
        }

        switch (bools[i].off) {
        case 0: c->persistent = on; break;
        case 1: c->public = on; break;
        case 2: c->members_only = on; break;
        case 3: c->moderated = on; break;
        case 4: c->change_subject = on; break;
        case 5: c->allow_invites = on; break;
        default:
            if (!on) {
                ngx_str_t  empty = ngx_null_string;
                return ngx_xmpp_muc_dup(&c->password, &empty);
            }
            break;
        }

        return NGX_OK;
    }

#undef ngx_xmpp_muc_var_is

    return NGX_OK;
}


static void
ngx_xmpp_muc_config_free(ngx_xmpp_muc_config_t *c)
{
    ngx_free(c->name.data);
    ngx_free(c->desc.data);
    ngx_free(c->password.data);
}


static ngx_int_t
ngx_xmpp_muc_config_copy(ngx_xmpp_muc_config_t *dst,
    ngx_xmpp_muc_config_t *src)
{
    *dst = *src;
    ngx_str_null(&dst->name);
    ngx_str_null(&dst->desc);
    ngx_str_null(&dst->password);

    if (ngx_xmpp_muc_dup(&dst->name, &src->name) != NGX_OK
        || ngx_xmpp_muc_dup(&dst->desc, &src->desc) != NGX_OK
        || ngx_xmpp_muc_dup(&dst->password, &src->password) != NGX_OK)
    {
        ngx_xmpp_muc_config_free(dst);
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* the fields of a submitted form, into c; NGX_ERROR: malformed */
static ngx_int_t
ngx_xmpp_muc_form_read(ngx_xmpp_muc_req_t *rq, xmlNodePtr x,
    ngx_xmpp_muc_config_t *c, json_t *changes)
{
    ngx_str_t    var, v;
    xmlNodePtr   f, vn;
    ngx_uint_t   n;

    n = 0;

    for (f = x->children; f; f = f->next) {
        if (f->type != XML_ELEMENT_NODE) {
            continue;
        }

        if (!ngx_xmpp_muc_is(f, "field", NGX_XMPP_NS_XDATA)) {
            continue;
        }

        if (++n > 64
            || ngx_xmpp_muc_prop(rq->pool, f, "var", &var) != NGX_OK
            || var.len == 0 || var.len > 128)
        {
            return NGX_ERROR;
        }

        vn = ngx_xmpp_muc_child(f, "value", NGX_XMPP_NS_XDATA);

        if (vn == NULL) {
            ngx_str_set(&v, "");

        } else if (ngx_xmpp_muc_content(rq->pool, vn, &v) != NGX_OK) {
            return NGX_ERROR;
        }

        if (ngx_xmpp_muc_form_field(rq, c, &var, &v, changes) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/* members-only now: who is not a member leaves (XEP-0045 9.5, 322) */
static void
ngx_xmpp_muc_expel_nonmembers(ngx_xmpp_muc_req_t *rq)
{
    ngx_queue_t         *q, *next;
    ngx_xmpp_muc_occ_t  *o;

    for (q = ngx_queue_head(&rq->room->occupants);
         q != ngx_queue_sentinel(&rq->room->occupants);
         q = next)
    {
        next = ngx_queue_next(q);
        o = ngx_queue_data(q, ngx_xmpp_muc_occ_t, queue);

        if (!o->leaving && o->affiliation < NGX_XMPP_MUC_MEMBER) {
            ngx_xmpp_muc_remove(rq, o, 322, NULL, "members-only");
        }
    }
}


static void
ngx_xmpp_muc_configure(ngx_xmpp_muc_req_t *rq, xmlNodePtr x)
{
    json_t                 *rec, *changes;
    ngx_str_t               type;
    ngx_uint_t              was_members;
    ngx_xmpp_muc_room_t    *room;
    ngx_xmpp_muc_config_t   c;

    room = rq->room;

    if (ngx_xmpp_muc_prop(rq->pool, x, "type", &type) != NGX_OK) {
        ngx_xmpp_muc_error(rq, "modify", "bad-request");
        return;
    }

    if (type.len == 6 && ngx_strncmp(type.data, "cancel", 6) == 0) {
        ngx_xmpp_muc_result(rq, NULL);
        return;
    }

    if (!(type.len == 6 && ngx_strncmp(type.data, "submit", 6) == 0)) {
        ngx_xmpp_muc_error(rq, "modify", "bad-request");
        return;
    }

    if (ngx_xmpp_muc_config_copy(&c, &room->conf) != NGX_OK) {
        ngx_xmpp_muc_error(rq, "wait", "internal-server-error");
        return;
    }

    changes = json_object();
    rec = ngx_xmpp_muc_record(room, &rq->actor, "muc_config");

    if (changes == NULL || rec == NULL) {
        goto internal;
    }

    if (ngx_xmpp_muc_form_read(rq, x, &c, changes) != NGX_OK) {
        /* XEP-0045 10.2: a form the room cannot take */
        ngx_xmpp_muc_config_free(&c);
        json_decref(changes);
        json_decref(rec);
        ngx_xmpp_muc_error(rq, "modify", "not-acceptable");
        return;
    }

    if (c.persistent && room->jid.len > 512) {
        ngx_xmpp_muc_config_free(&c);
        json_decref(changes);
        json_decref(rec);
        ngx_xmpp_muc_error(rq, "modify", "not-acceptable");
        return;
    }

    if (caud_record_set_param(rec, "fields", changes) != 0) {
        changes = NULL;
        goto internal;
    }

    changes = NULL;

    if (ngx_xmpp_audit_defer(ngx_xmpp_muc_conf, rec, NULL, NULL, 0,
                             ngx_cycle->log)
        != NGX_OK)
    {
        ngx_xmpp_muc_config_free(&c);
        json_decref(rec);
        ngx_xmpp_muc_error(rq, "wait", "resource-constraint");
        return;
    }

    json_decref(rec);

    was_members = room->conf.members_only;
    ngx_xmpp_muc_config_free(&room->conf);
    room->conf = c;

    ngx_xmpp_muc_result(rq, NULL);

    if (room->conf.members_only && !was_members) {
        ngx_xmpp_muc_expel_nonmembers(rq);
    }

    ngx_xmpp_muc_save(room);
    return;

internal:

    ngx_xmpp_muc_config_free(&c);

    if (changes) {
        json_decref(changes);
    }

    if (rec) {
        json_decref(rec);
    }

    ngx_xmpp_muc_error(rq, "wait", "internal-server-error");
}


/* XEP-0045 10.9: everybody leaves, the room is gone */
static void
ngx_xmpp_muc_destroy(ngx_xmpp_muc_req_t *rq, xmlNodePtr d)
{
    json_t              *rec;
    ngx_str_t            reason;
    xmlNodePtr           rn;
    ngx_queue_t         *q, *next;
    ngx_xmpp_muc_occ_t  *o;

    ngx_str_null(&reason);

    rn = ngx_xmpp_muc_child(d, "reason", NGX_XMPP_NS_MUC_OWNER);
    if (rn) {
        (void) ngx_xmpp_muc_content(rq->pool, rn, &reason);
    }

    rec = ngx_xmpp_muc_record(rq->room, &rq->actor, "muc_destroy");
    if (rec == NULL
        || (reason.len && ngx_xmpp_muc_record_str(rec, "reason", &reason)
                          != NGX_OK)
        || ngx_xmpp_audit_defer(ngx_xmpp_muc_conf, rec, NULL, NULL, 0,
                                ngx_cycle->log)
           != NGX_OK)
    {
        if (rec) {
            json_decref(rec);
        }

        ngx_xmpp_muc_error(rq, "wait", "internal-server-error");
        return;
    }

    json_decref(rec);

    for (q = ngx_queue_head(&rq->room->occupants);
         q != ngx_queue_sentinel(&rq->room->occupants);
         q = next)
    {
        next = ngx_queue_next(q);
        o = ngx_queue_data(q, ngx_xmpp_muc_occ_t, queue);

        if (!o->leaving) {
            ngx_xmpp_muc_remove(rq, o, 0, &reason, "room-destroyed");
        }
    }

    rq->room->destroyed = 1;
    rq->room->state = NGX_XMPP_MUC_ROOM_ABSENT;
    ngx_xmpp_muc_save(rq->room);

    ngx_xmpp_muc_result(rq, NULL);
}


void
ngx_xmpp_muc_owner_iq(ngx_xmpp_muc_req_t *rq, xmlNodePtr q)
{
    xmlNodePtr        x;
    ngx_xmpp_wbuf_t  *b;

    if (ngx_xmpp_muc_affiliation(rq->room, &rq->actor.jid.bare)
        != NGX_XMPP_MUC_OWNER)
    {
        ngx_xmpp_muc_error(rq, "auth", "forbidden");
        return;
    }

    if (rq->type.data[0] == 'g') {
        b = ngx_xmpp_muc_buf();
        ngx_xmpp_muc_form(rq->room, b);
        ngx_xmpp_muc_result(rq, b);
        return;
    }

    x = ngx_xmpp_muc_child(q, "x", NGX_XMPP_NS_XDATA);
    if (x) {
        ngx_xmpp_muc_configure(rq, x);
        return;
    }

    x = ngx_xmpp_muc_child(q, "destroy", NGX_XMPP_NS_MUC_OWNER);
    if (x) {
        ngx_xmpp_muc_destroy(rq, x);
        return;
    }

    ngx_xmpp_muc_error(rq, "modify", "bad-request");
}


/* ------------------------------------------------------------------ */
/* affiliations and roles (XEP-0045 8 and 9) */

static void
ngx_xmpp_muc_admin_list(ngx_xmpp_muc_req_t *rq, xmlNodePtr item)
{
    ngx_int_t            a, r;
    ngx_str_t            v;
    ngx_uint_t           i, mine;
    ngx_queue_t         *q;
    ngx_xmpp_wbuf_t     *b;
    ngx_xmpp_muc_occ_t  *o;

    mine = ngx_xmpp_muc_affiliation(rq->room, &rq->actor.jid.bare);
    b = ngx_xmpp_muc_buf();

    ngx_xmpp_wbuf_lit(b, "<query xmlns='" NGX_XMPP_NS_MUC_ADMIN "'>");

    if (ngx_xmpp_muc_prop(rq->pool, item, "affiliation", &v) == NGX_OK) {
        a = ngx_xmpp_muc_affil_parse(&v);

        if (a == NGX_ERROR || a == NGX_XMPP_MUC_NOAFFIL) {
            ngx_xmpp_muc_error(rq, "modify", "bad-request");
            return;
        }

        if (mine < NGX_XMPP_MUC_ADMIN) {
            ngx_xmpp_muc_error(rq, "auth", "forbidden");
            return;
        }

        for (i = 0; i < rq->room->naffils; i++) {
            if (rq->room->affils[i].affiliation != (ngx_uint_t) a) {
                continue;
            }

            ngx_xmpp_wbuf_lit(b, "<item affiliation='");
            ngx_xmpp_wbuf_str(b, ngx_xmpp_muc_affil_name(a));
            ngx_xmpp_wbuf_lit(b, "' jid='");
            ngx_xmpp_wbuf_escs(b, &rq->room->affils[i].jid);
            ngx_xmpp_wbuf_lit(b, "'/>");
        }

    } else if (ngx_xmpp_muc_prop(rq->pool, item, "role", &v) == NGX_OK) {
        r = ngx_xmpp_muc_role_parse(&v);
        o = ngx_xmpp_muc_occ_by_jid(rq->room, &rq->actor.jid.full);

        if (r == NGX_ERROR || r == NGX_XMPP_MUC_ROLE_NONE) {
            ngx_xmpp_muc_error(rq, "modify", "bad-request");
            return;
        }

        if (o == NULL || o->role != NGX_XMPP_MUC_ROLE_MODERATOR) {
            ngx_xmpp_muc_error(rq, "auth", "forbidden");
            return;
        }

        for (q = ngx_queue_head(&rq->room->occupants);
             q != ngx_queue_sentinel(&rq->room->occupants);
             q = ngx_queue_next(q))
        {
            o = ngx_queue_data(q, ngx_xmpp_muc_occ_t, queue);

            if (o->leaving || o->role != (ngx_uint_t) r) {
                continue;
            }

            ngx_xmpp_wbuf_lit(b, "<item role='");
            ngx_xmpp_wbuf_str(b, ngx_xmpp_muc_role_name(r));
            ngx_xmpp_wbuf_lit(b, "' affiliation='");
            ngx_xmpp_wbuf_str(b, ngx_xmpp_muc_affil_name(o->affiliation));
            ngx_xmpp_wbuf_lit(b, "' nick='");
            ngx_xmpp_wbuf_escs(b, &o->nick);
            ngx_xmpp_wbuf_lit(b, "' jid='");
            ngx_xmpp_wbuf_escs(b, &o->jid);
            ngx_xmpp_wbuf_lit(b, "'/>");
        }

    } else {
        ngx_xmpp_muc_error(rq, "modify", "bad-request");
        return;
    }

    ngx_xmpp_wbuf_lit(b, "</query>");
    ngx_xmpp_muc_result(rq, b);
}


/* a role change by nick (XEP-0045 8.2 kick, 8.3-8.6 voice, 9.6 mod) */
static ngx_int_t
ngx_xmpp_muc_set_role(ngx_xmpp_muc_req_t *rq, ngx_xmpp_muc_occ_t *me,
    ngx_str_t *nick, ngx_uint_t role, ngx_str_t *reason, ngx_uint_t apply)
{
    json_t              *rec;
    ngx_xmpp_muc_occ_t  *o;

    o = ngx_xmpp_muc_occ_by_nick(rq->room, nick);

    if (o == NULL) {
        ngx_xmpp_muc_error(rq, "cancel", "item-not-found");
        return NGX_ERROR;
    }

    if (me == NULL || me->role != NGX_XMPP_MUC_ROLE_MODERATOR
        || (role == NGX_XMPP_MUC_ROLE_MODERATOR
            && me->affiliation < NGX_XMPP_MUC_ADMIN))
    {
        ngx_xmpp_muc_error(rq, "auth", "forbidden");
        return NGX_ERROR;
    }

    /* nobody changes the role of an admin or owner but a higher one */
    if (o->affiliation >= NGX_XMPP_MUC_ADMIN
        && o->affiliation >= me->affiliation && o != me)
    {
        ngx_xmpp_muc_error(rq, "cancel", "not-allowed");
        return NGX_ERROR;
    }

    if (!apply) {
        return NGX_OK;
    }

    if (role != NGX_XMPP_MUC_ROLE_NONE) {
        o->role = role;
        ngx_xmpp_muc_role_changed(rq, o);
        return NGX_OK;
    }

    rec = ngx_xmpp_muc_record(rq->room, &rq->actor, "muc_kick");

    if (rec == NULL
        || ngx_xmpp_muc_record_str(rec, "nick", &o->nick) != NGX_OK
        || ngx_xmpp_muc_record_str(rec, "jid", &o->jid) != NGX_OK
        || (reason->len
            && ngx_xmpp_muc_record_str(rec, "reason", reason) != NGX_OK)
        || ngx_xmpp_audit_defer(ngx_xmpp_muc_conf, rec, NULL, NULL, 0,
                                ngx_cycle->log)
           != NGX_OK)
    {
        if (rec) {
            json_decref(rec);
        }

        ngx_xmpp_muc_error(rq, "wait", "internal-server-error");
        return NGX_ERROR;
    }

    json_decref(rec);

    ngx_xmpp_muc_remove(rq, o, 307, reason, "kicked");

    return NGX_OK;
}


/* an affiliation change by bare JID (XEP-0045 9.1 ban, 9.3, 10.3...) */
static ngx_int_t
ngx_xmpp_muc_set_affil(ngx_xmpp_muc_req_t *rq, ngx_uint_t mine,
    ngx_str_t *jid, ngx_uint_t a, ngx_str_t *reason, ngx_uint_t apply)
{
    json_t              *rec;
    ngx_uint_t           old;
    ngx_queue_t         *q, *next;
    ngx_xmpp_jid_t       j;
    ngx_xmpp_muc_occ_t  *o;

    if (ngx_xmpp_jid_parse(rq->pool, jid, &j) != NGX_OK) {
        ngx_xmpp_muc_error(rq, "modify", "jid-malformed");
        return NGX_ERROR;
    }

    old = ngx_xmpp_muc_affiliation(rq->room, &j.bare);

    if (mine < NGX_XMPP_MUC_ADMIN
        || ((a >= NGX_XMPP_MUC_ADMIN || old >= NGX_XMPP_MUC_ADMIN)
            && mine < NGX_XMPP_MUC_OWNER))
    {
        ngx_xmpp_muc_error(rq, "auth", "forbidden");
        return NGX_ERROR;
    }

    if (j.bare.len == rq->actor.jid.bare.len
        && ngx_memcmp(j.bare.data, rq->actor.jid.bare.data, j.bare.len) == 0
        && a != NGX_XMPP_MUC_OWNER && old == NGX_XMPP_MUC_OWNER)
    {
        /* XEP-0045 10.6: an owner cannot drop out; admins cannot either */
        ngx_xmpp_muc_error(rq, "cancel", "conflict");
        return NGX_ERROR;
    }

    if (!apply) {
        return NGX_OK;
    }

    rec = ngx_xmpp_muc_record(rq->room, &rq->actor,
                              a == NGX_XMPP_MUC_OUTCAST ? "muc_ban"
                                                        : "muc_affiliation");

    if (rec == NULL
        || ngx_xmpp_muc_record_str(rec, "jid", &j.bare) != NGX_OK
        || caud_record_set_param_str(rec, "affiliation",
                                     ngx_xmpp_muc_affil_name(a),
                                     ngx_strlen(ngx_xmpp_muc_affil_name(a)))
           != 0
        || (reason->len
            && ngx_xmpp_muc_record_str(rec, "reason", reason) != NGX_OK)
        || ngx_xmpp_audit_defer(ngx_xmpp_muc_conf, rec, NULL, NULL, 0,
                                ngx_cycle->log)
           != NGX_OK)
    {
        if (rec) {
            json_decref(rec);
        }

        ngx_xmpp_muc_error(rq, "wait", "internal-server-error");
        return NGX_ERROR;
    }

    json_decref(rec);

    if (ngx_xmpp_muc_set_affiliation(rq->room, &j.bare, a) != NGX_OK) {
        ngx_xmpp_muc_error(rq, "wait", "resource-constraint");
        return NGX_ERROR;
    }

    for (q = ngx_queue_head(&rq->room->occupants);
         q != ngx_queue_sentinel(&rq->room->occupants);
         q = next)
    {
        next = ngx_queue_next(q);
        o = ngx_queue_data(q, ngx_xmpp_muc_occ_t, queue);

        if (o->leaving || o->bare.len != j.bare.len
            || ngx_memcmp(o->bare.data, j.bare.data, j.bare.len) != 0)
        {
            continue;
        }

        o->affiliation = a;

        if (a == NGX_XMPP_MUC_OUTCAST) {
            ngx_xmpp_muc_remove(rq, o, 301, reason, "banned");

        } else if (rq->room->conf.members_only
                   && a < NGX_XMPP_MUC_MEMBER)
        {
            ngx_xmpp_muc_remove(rq, o, 321, reason, "affiliation-removed");

        } else {
            o->role = ngx_xmpp_muc_default_role(rq->room, a);
            ngx_xmpp_muc_role_changed(rq, o);
        }
    }

    return NGX_OK;
}


/* every item checked first, then applied: all or nothing */
void
ngx_xmpp_muc_admin_iq(ngx_xmpp_muc_req_t *rq, xmlNodePtr query)
{
    ngx_int_t            a;
    ngx_str_t            nick, jid, v, reason;
    ngx_uint_t           mine, apply, n;
    xmlNodePtr           item, rn;
    ngx_xmpp_muc_occ_t  *me;

    item = ngx_xmpp_muc_child(query, "item", NGX_XMPP_NS_MUC_ADMIN);
    if (item == NULL) {
        ngx_xmpp_muc_error(rq, "modify", "bad-request");
        return;
    }

    if (rq->type.data[0] == 'g') {
        ngx_xmpp_muc_admin_list(rq, item);
        return;
    }

    mine = ngx_xmpp_muc_affiliation(rq->room, &rq->actor.jid.bare);
    me = ngx_xmpp_muc_occ_by_jid(rq->room, &rq->actor.jid.full);

    for (apply = 0; apply < 2; apply++) {
        n = 0;

        for (item = query->children; item; item = item->next) {
            if (!ngx_xmpp_muc_is(item, "item", NGX_XMPP_NS_MUC_ADMIN)) {
                continue;
            }

            if (++n > NGX_XMPP_MUC_ITEMS_MAX) {
                ngx_xmpp_muc_error(rq, "modify", "policy-violation");
                return;
            }

            ngx_str_null(&reason);
            rn = ngx_xmpp_muc_child(item, "reason", NGX_XMPP_NS_MUC_ADMIN);
            if (rn) {
                (void) ngx_xmpp_muc_content(rq->pool, rn, &reason);
            }

            if (ngx_xmpp_muc_prop(rq->pool, item, "role", &v) == NGX_OK) {
                a = ngx_xmpp_muc_role_parse(&v);

                if (a == NGX_ERROR
                    || ngx_xmpp_muc_prop(rq->pool, item, "nick", &nick)
                       != NGX_OK)
                {
                    ngx_xmpp_muc_error(rq, "modify", "bad-request");
                    return;
                }

                if (ngx_xmpp_muc_set_role(rq, me, &nick, a, &reason, apply)
                    != NGX_OK)
                {
                    return;
                }

                continue;
            }

            if (ngx_xmpp_muc_prop(rq->pool, item, "affiliation", &v)
                != NGX_OK
                || (a = ngx_xmpp_muc_affil_parse(&v)) == NGX_ERROR
                || ngx_xmpp_muc_prop(rq->pool, item, "jid", &jid) != NGX_OK)
            {
                ngx_xmpp_muc_error(rq, "modify", "bad-request");
                return;
            }

            if (ngx_xmpp_muc_set_affil(rq, mine, &jid, a, &reason, apply)
                != NGX_OK)
            {
                return;
            }
        }
    }

    ngx_xmpp_muc_save(rq->room);
    ngx_xmpp_muc_result(rq, NULL);
}


/* ------------------------------------------------------------------ */
/* invitations (XEP-0045 7.8.2; XEP-0249 ones are plain messages) */

void
ngx_xmpp_muc_invite(ngx_xmpp_muc_req_t *rq, xmlNodePtr x)
{
    json_t               *rec;
    ngx_str_t             to, reason;
    xmlNodePtr            inv, rn;
    ngx_uint_t            decline, mine;
    ngx_xmpp_jid_t        j;
    ngx_xmpp_wbuf_t      *b;
    ngx_xmpp_muc_occ_t   *o;
    ngx_xmpp_muc_job_t   *job;
    ngx_xmpp_muc_room_t  *room;

    room = rq->room;
    decline = 0;

    inv = ngx_xmpp_muc_child(x, "invite", NGX_XMPP_NS_MUC_USER);
    if (inv == NULL) {
        inv = ngx_xmpp_muc_child(x, "decline", NGX_XMPP_NS_MUC_USER);
        decline = 1;
    }

    if (ngx_xmpp_muc_prop(rq->pool, inv, "to", &to) != NGX_OK
        || ngx_xmpp_jid_parse(rq->pool, &to, &j) != NGX_OK)
    {
        ngx_xmpp_muc_error(rq, "modify", "jid-malformed");
        return;
    }

    ngx_str_null(&reason);
    rn = ngx_xmpp_muc_child(inv, "reason", NGX_XMPP_NS_MUC_USER);
    if (rn) {
        (void) ngx_xmpp_muc_content(rq->pool, rn, &reason);
    }

    o = ngx_xmpp_muc_occ_by_jid(room, &rq->actor.jid.full);
    mine = ngx_xmpp_muc_affiliation(room, &rq->actor.jid.bare);

    if (!decline) {
        if (o == NULL) {
            ngx_xmpp_muc_error(rq, "modify", "not-acceptable");
            return;
        }

        /* XEP-0045 7.8.2: in a members-only room, who may invite */
        if (room->conf.members_only && mine < NGX_XMPP_MUC_ADMIN
            && !room->conf.allow_invites)
        {
            ngx_xmpp_muc_error(rq, "auth", "forbidden");
            return;
        }
    }

    if (rq->room->njobs >= ngx_xmpp_muc_conf->muc_queue) {
        ngx_xmpp_muc_error(rq, "wait", "resource-constraint");
        return;
    }

    b = ngx_xmpp_muc_buf();
    ngx_xmpp_wbuf_lit(b, "<message to='");
    ngx_xmpp_wbuf_escs(b, &j.full);
    ngx_xmpp_wbuf_lit(b, "' from='");
    ngx_xmpp_wbuf_escs(b, &room->jid);
    ngx_xmpp_wbuf_lit(b, "' xmlns='" NGX_XMPP_NS_CLIENT "'><x xmlns='"
                      NGX_XMPP_NS_MUC_USER "'><");
    ngx_xmpp_wbuf_str(b, decline ? "decline" : "invite");
    ngx_xmpp_wbuf_lit(b, " from='");
    ngx_xmpp_wbuf_escs(b, &rq->actor.jid.bare);
    ngx_xmpp_wbuf_lit(b, "'>");

    if (reason.len) {
        ngx_xmpp_wbuf_lit(b, "<reason>");
        ngx_xmpp_wbuf_escs(b, &reason);
        ngx_xmpp_wbuf_lit(b, "</reason>");
    }

    ngx_xmpp_wbuf_lit(b, "</");
    ngx_xmpp_wbuf_str(b, decline ? "decline" : "invite");
    ngx_xmpp_wbuf_lit(b, ">");

    if (!decline && room->conf.password.len) {
        ngx_xmpp_wbuf_lit(b, "<password>");
        ngx_xmpp_wbuf_escs(b, &room->conf.password);
        ngx_xmpp_wbuf_lit(b, "</password>");
    }

    ngx_xmpp_wbuf_lit(b, "</x>");

    if (!decline) {
        /* XEP-0249's element too, for clients that only know that one */
        ngx_xmpp_wbuf_lit(b, "<x xmlns='" NGX_XMPP_NS_CONFERENCE "' jid='");
        ngx_xmpp_wbuf_escs(b, &room->jid);
        ngx_xmpp_wbuf_lit(b, "'/>");
    }

    ngx_xmpp_wbuf_lit(b, "</message>");

    if (b->failed) {
        ngx_xmpp_muc_error(rq, "modify", "policy-violation");
        return;
    }

    /* data: the target JID, a NUL, then the stanza */
    job = ngx_xmpp_muc_job(NGX_XMPP_MUC_JOB_ROUTE, NULL,
                           j.full.len + 1 + (b->last - b->start));
    rec = ngx_xmpp_muc_record(room, &rq->actor,
                              decline ? "muc_decline" : "muc_invite");

    if (job == NULL || rec == NULL
        || ngx_xmpp_muc_record_str(rec, "jid", &j.full) != NGX_OK
        || (reason.len
            && ngx_xmpp_muc_record_str(rec, "reason", &reason) != NGX_OK))
    {
        goto failed;
    }

    ngx_memcpy(job->data, j.full.data, j.full.len);
    job->data[j.full.len] = '\0';
    ngx_memcpy(job->data + j.full.len + 1, b->start, b->last - b->start);
    job->code = j.full.len;

    if (!decline && room->conf.members_only
        && ngx_xmpp_muc_affiliation(room, &j.bare) < NGX_XMPP_MUC_MEMBER)
    {
        /* XEP-0045 7.8.2: the invitee becomes a member */
        if (ngx_xmpp_muc_set_affiliation(room, &j.bare, NGX_XMPP_MUC_MEMBER)
            != NGX_OK
            || caud_record_set_param_str(rec, "affiliation", "member", 6)
               != 0)
        {
            goto failed;
        }

        ngx_xmpp_muc_save(room);
    }

    if (ngx_xmpp_muc_commit(room, rec, job, ngx_cycle->log) != NGX_OK) {
        ngx_free(job);
        json_decref(rec);
        ngx_xmpp_muc_error(rq, "wait", "resource-constraint");
        return;
    }

    json_decref(rec);
    return;

failed:

    ngx_free(job);

    if (rec) {
        json_decref(rec);
    }

    ngx_xmpp_muc_error(rq, "wait", "internal-server-error");
}


/* ------------------------------------------------------------------ */
/* discovery (XEP-0045 6, XEP-0030, XEP-0128) */

void
ngx_xmpp_muc_room_disco(ngx_xmpp_muc_req_t *rq, xmlNodePtr q)
{
    u_char                num[NGX_INT_T_LEN];
    ngx_queue_t          *qq;
    ngx_xmpp_wbuf_t      *b;
    ngx_xmpp_muc_occ_t   *o;
    ngx_xmpp_muc_room_t  *room;

    room = rq->room;
    b = ngx_xmpp_muc_buf();

    if (ngx_xmpp_muc_is(q, "query", NGX_XMPP_NS_DISCO_ITEMS)) {
        ngx_xmpp_wbuf_lit(b, "<query xmlns='" NGX_XMPP_NS_DISCO_ITEMS "'>");

        /* XEP-0045 6.5: occupants only where real JIDs are no secret */
        if (!room->conf.semi_anonymous && !room->conf.members_only) {
            for (qq = ngx_queue_head(&room->occupants);
                 qq != ngx_queue_sentinel(&room->occupants);
                 qq = ngx_queue_next(qq))
            {
                o = ngx_queue_data(qq, ngx_xmpp_muc_occ_t, queue);
                if (o->leaving) {
                    continue;
                }

                ngx_xmpp_wbuf_lit(b, "<item jid='");
                ngx_xmpp_wbuf_escs(b, &room->jid);
                ngx_xmpp_wbuf_lit(b, "/");
                ngx_xmpp_wbuf_escs(b, &o->nick);
                ngx_xmpp_wbuf_lit(b, "'/>");
            }
        }

        ngx_xmpp_wbuf_lit(b, "</query>");
        ngx_xmpp_muc_result(rq, b);
        return;
    }

    ngx_xmpp_wbuf_lit(b, "<query xmlns='" NGX_XMPP_NS_DISCO_INFO "'>"
                      "<identity category='conference' type='text' name='");
    ngx_xmpp_wbuf_escs(b, room->conf.name.len ? &room->conf.name
                                             : &rq->to.local);
    ngx_xmpp_wbuf_lit(b, "'/><feature var='" NGX_XMPP_NS_MUC "'/>"
                      "<feature var='" NGX_XMPP_NS_DISCO_INFO "'/>"
                      "<feature var='" NGX_XMPP_NS_PING "'/>");

    if (ngx_xmpp_muc_conf->audit_zone && ngx_xmpp_muc_conf->db_thread_pool) {
        /* XEP-0313 section 5, XEP-0359: the room's archive and its ids */
        ngx_xmpp_wbuf_lit(b, "<feature var='" NGX_XMPP_NS_MAM "'/>"
                          "<feature var='urn:xmpp:sid:0'/>");
    }

#define ngx_xmpp_muc_feature(on, yes, no)                                  \
    ngx_xmpp_wbuf_lit(b, "<feature var='");                                \
    ngx_xmpp_wbuf_str(b, (on) ? yes : no);                                 \
    ngx_xmpp_wbuf_lit(b, "'/>")

    ngx_xmpp_muc_feature(room->conf.persistent, "muc_persistent",
                         "muc_temporary");
    ngx_xmpp_muc_feature(room->conf.members_only, "muc_membersonly",
                         "muc_open");
    ngx_xmpp_muc_feature(room->conf.semi_anonymous, "muc_semianonymous",
                         "muc_nonanonymous");
    ngx_xmpp_muc_feature(room->conf.password.len, "muc_passwordprotected",
                         "muc_unsecured");
    ngx_xmpp_muc_feature(room->conf.public, "muc_public", "muc_hidden");
    ngx_xmpp_muc_feature(room->conf.moderated, "muc_moderated",
                         "muc_unmoderated");

#undef ngx_xmpp_muc_feature

    ngx_xmpp_wbuf_lit(b, "<x xmlns='" NGX_XMPP_NS_XDATA "' type='result'>"
                      "<field var='FORM_TYPE' type='hidden'><value>"
                      "http://jabber.org/protocol/muc#roominfo</value>"
                      "</field><field var='muc#roominfo_description'>"
                      "<value>");
    ngx_xmpp_wbuf_escs(b, &room->conf.desc);
    ngx_xmpp_wbuf_lit(b, "</value></field><field var='"
                      "muc#roominfo_occupants'><value>");
    ngx_xmpp_wbuf_add(b, num, ngx_sprintf(num, "%ui", room->noccupants)
                              - num);
    ngx_xmpp_wbuf_lit(b, "</value></field><field var='"
                      "muc#roominfo_subject'><value>");
    ngx_xmpp_wbuf_escs(b, &room->subject);
    ngx_xmpp_wbuf_lit(b, "</value></field></x></query>");

    ngx_xmpp_muc_result(rq, b);
}


/*
 * IQs to the service itself, answered by the session's worker: its
 * identity, and the rooms some worker holds (XEP-0045 6.1, 6.3).
 */
void
ngx_xmpp_muc_service_iq(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st)
{
    ngx_str_t         *rooms;
    ngx_uint_t         i, n, get;
    ngx_xmpp_node_t   *q;
    ngx_xmpp_wbuf_t   *b;

    get = (st->type.len == 3 && ngx_strncmp(st->type.data, "get", 3) == 0);

    if (!get && !(st->type.len == 3
                  && ngx_strncmp(st->type.data, "set", 3) == 0))
    {
        return;
    }

    q = ngx_xmpp_node_first_element(st->node);

    if (!get || q == NULL) {
        ngx_xmpp_router_error(s, st, "cancel", "service-unavailable");
        return;
    }

    b = ngx_xmpp_wbuf_scratch(1024 * 1024);

    ngx_xmpp_wbuf_lit(b, "<iq xmlns='" NGX_XMPP_NS_CLIENT "' type='result'"
                      " from='");
    ngx_xmpp_wbuf_nstr(b, &s->conf->muc_domain);
    ngx_xmpp_wbuf_lit(b, "' to='");
    ngx_xmpp_wbuf_escs(b, &s->jid.full);
    ngx_xmpp_wbuf_lit(b, "' id='");
    ngx_xmpp_wbuf_escs(b, &st->id);
    ngx_xmpp_wbuf_lit(b, "'>");

#define ngx_xmpp_muc_q(lit)                                                \
    (q->name.len == 5 && ngx_strncmp(q->name.data, "query", 5) == 0       \
     && q->ns.len == sizeof(lit) - 1                                       \
     && ngx_strncmp(q->ns.data, lit, q->ns.len) == 0)

    if (ngx_xmpp_muc_q(NGX_XMPP_NS_DISCO_INFO)) {
        ngx_xmpp_wbuf_lit(b, "<query xmlns='" NGX_XMPP_NS_DISCO_INFO "'>"
                          "<identity category='conference' type='text'"
                          " name='Rooms'/>"
                          "<feature var='" NGX_XMPP_NS_DISCO_INFO "'/>"
                          "<feature var='" NGX_XMPP_NS_DISCO_ITEMS "'/>"
                          "<feature var='" NGX_XMPP_NS_MUC "'/>"
                          "<feature var='" NGX_XMPP_NS_PING "'/>"
                          "</query></iq>");

    } else if (ngx_xmpp_muc_q(NGX_XMPP_NS_DISCO_ITEMS)) {
        rooms = ngx_palloc(st->pool, NGX_XMPP_MUC_ITEMS_MAX
                                     * sizeof(ngx_str_t));
        if (rooms == NULL) {
            return;
        }

        n = ngx_xmpp_registry_room_list(s->conf, st->pool, rooms,
                                        NGX_XMPP_MUC_ITEMS_MAX);

        ngx_xmpp_wbuf_lit(b, "<query xmlns='" NGX_XMPP_NS_DISCO_ITEMS "'>");

        for (i = 0; i < n; i++) {
            ngx_xmpp_wbuf_lit(b, "<item jid='");
            ngx_xmpp_wbuf_escs(b, &rooms[i]);
            ngx_xmpp_wbuf_lit(b, "'/>");
        }

        ngx_xmpp_wbuf_lit(b, "</query></iq>");

    } else if (q->name.len == 4 && ngx_strncmp(q->name.data, "ping", 4) == 0
               && q->ns.len == sizeof(NGX_XMPP_NS_PING) - 1
               && ngx_strncmp(q->ns.data, NGX_XMPP_NS_PING, q->ns.len) == 0)
    {
        b->last -= 1;
        ngx_xmpp_wbuf_lit(b, "/>");

    } else {
        ngx_xmpp_router_error(s, st, "cancel", "service-unavailable");
        return;
    }

#undef ngx_xmpp_muc_q

    (void) ngx_xmpp_session_send_wbuf(s, b);
}
