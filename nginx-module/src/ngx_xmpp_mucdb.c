
/*
 * Group chat (XEP-0045): persistent rooms in MariaDB through
 * ngx_xmpp_db.c.  One row per persistent room (audit/schema/003_muc.sql)
 * written whole after every change, one write per room at a time, and
 * the load of a room the worker does not hold yet: its row, then its
 * history from the room's muc_message audit records (docs/muc.md
 * "Persistent rooms in MariaDB").
 */


#include "ngx_xmpp_muc.h"

#include <mysql.h>


#define NGX_XMPP_MUC_SAVE_RETRY  1000


typedef struct {
    ngx_str_t              jid;
    ngx_str_t              config;
    ngx_str_t              affils;
    ngx_str_t              subject;
    ngx_str_t              subject_from;
    unsigned               remove:1;
} ngx_xmpp_muc_save_t;


typedef struct {
    ngx_str_t              jid;
    ngx_uint_t             history;
    unsigned               found:1;
    char                  *config;       /* malloc()ed by the thread */
    char                  *affils;
    char                  *subject;
    char                  *subject_from;
    ngx_uint_t             nhist;
    char                 **hist;          /* stanzas, newest first */
    int64_t               *hist_ts;
} ngx_xmpp_muc_load_t;


static void ngx_xmpp_muc_save_done(ngx_xmpp_db_req_t *r);
static void ngx_xmpp_muc_save_again(ngx_event_t *ev);


static char *
ngx_xmpp_muc_config_json(ngx_xmpp_muc_room_t *room)
{
    char    *text;
    json_t  *c;

    c = json_pack("{s:s%,s:s%,s:s%,s:b,s:b,s:b,s:b,s:b,s:b,s:b,s:I}",
                  "name", room->conf.name.data ? (char *) room->conf.name.data
                                               : "", room->conf.name.len,
                  "desc", room->conf.desc.data ? (char *) room->conf.desc.data
                                               : "", room->conf.desc.len,
                  "password", room->conf.password.data
                              ? (char *) room->conf.password.data : "",
                  room->conf.password.len,
                  "persistent", (int) room->conf.persistent,
                  "members_only", (int) room->conf.members_only,
                  "semi_anonymous", (int) room->conf.semi_anonymous,
                  "moderated", (int) room->conf.moderated,
                  "public", (int) room->conf.public,
                  "change_subject", (int) room->conf.change_subject,
                  "allow_invites", (int) room->conf.allow_invites,
                  "max_users", (json_int_t) room->conf.max_users);
    if (c == NULL) {
        return NULL;
    }

    text = json_dumps(c, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(c);

    return text;
}


static char *
ngx_xmpp_muc_affils_json(ngx_xmpp_muc_room_t *room)
{
    char        *text;
    json_t      *o;
    ngx_uint_t   i;

    o = json_object();
    if (o == NULL) {
        return NULL;
    }

    for (i = 0; i < room->naffils; i++) {
        if (json_object_setn_new(o, (char *) room->affils[i].jid.data,
                                 room->affils[i].jid.len,
                                 json_string(ngx_xmpp_muc_affil_name(
                                     room->affils[i].affiliation)))
            != 0)
        {
            json_decref(o);
            return NULL;
        }
    }

    text = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(o);

    return text;
}


static int
ngx_xmpp_muc_save_run(MYSQL *conn, ngx_xmpp_db_req_t *r)
{
    MYSQL_STMT           *stmt;
    ngx_str_t             p[5];
    ngx_xmpp_muc_save_t  *sv;

    sv = r->ctx;
    p[0] = sv->jid;

    if (sv->remove) {
        stmt = ngx_xmpp_db_exec(conn, r,
                                "DELETE FROM muc_room WHERE jid = ?", p, 1);

    } else {
        p[1] = sv->config;
        p[2] = sv->affils;
        p[3] = sv->subject;
        p[4] = sv->subject_from;

        stmt = ngx_xmpp_db_exec(conn, r,
                                "REPLACE INTO muc_room (jid, config,"
                                " affiliations, subject, subject_from,"
                                " updated_at)"
                                " VALUES (?, ?, ?, ?, ?, UTC_TIMESTAMP(6))",
                                p, 5);
    }

    if (stmt == NULL) {
        return -1;
    }

    (void) mysql_stmt_close(stmt);

    return 0;
}


/*
 * The room as it is now goes to MariaDB: a row for a persistent room,
 * none for another.  One save per room at a time, in order; a change
 * while one runs is saved when it ends.
 */
void
ngx_xmpp_muc_save(ngx_xmpp_muc_room_t *room)
{
    u_char               *p;
    char                 *config, *affils;
    size_t                size;
    ngx_uint_t            remove;
    ngx_xmpp_db_req_t    *r;
    ngx_xmpp_muc_save_t  *sv;

    /* the service's items follow the room's "publicroom" */
    ngx_xmpp_registry_room_hide(ngx_xmpp_muc_conf, &room->jid,
                                !room->conf.public || room->destroyed);

    if (room->save) {
        room->dirty = 1;
        return;
    }

    room->dirty = 0;
    remove = !room->conf.persistent || room->destroyed;
    config = NULL;
    affils = NULL;

    if (!remove) {
        config = ngx_xmpp_muc_config_json(room);
        affils = ngx_xmpp_muc_affils_json(room);

        if (config == NULL || affils == NULL) {
            goto failed;
        }
    }

    size = sizeof(ngx_xmpp_muc_save_t) + room->jid.len
           + (config ? ngx_strlen(config) : 0)
           + (affils ? ngx_strlen(affils) : 0)
           + room->subject.len + room->subject_from.len + 8;

    r = ngx_xmpp_db_create(ngx_xmpp_muc_conf, size, ngx_cycle->log);
    if (r == NULL) {
        goto failed;
    }

    sv = r->ctx;
    sv->remove = remove;
    p = (u_char *) (sv + 1);

    /* the thread reads only this copy: the room changes meanwhile */
#define ngx_xmpp_muc_put(field, src, n)                                    \
    field.data = p; field.len = n;                                         \
    if (n) { p = ngx_cpymem(p, src, n); }

    ngx_xmpp_muc_put(sv->jid, room->jid.data, room->jid.len);

    if (!remove) {
        ngx_xmpp_muc_put(sv->config, config, ngx_strlen(config));
        ngx_xmpp_muc_put(sv->affils, affils, ngx_strlen(affils));
        ngx_xmpp_muc_put(sv->subject, room->subject.data, room->subject.len);
        ngx_xmpp_muc_put(sv->subject_from, room->subject_from.data,
                         room->subject_from.len);
    }

#undef ngx_xmpp_muc_put

    free(config);
    free(affils);

    r->run = ngx_xmpp_muc_save_run;
    r->done = ngx_xmpp_muc_save_done;
    r->data = room;

    if (ngx_xmpp_db_post(r) != NGX_OK) {
        ngx_xmpp_db_destroy(r);
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "xmpp: room \"%V\" not saved: database queue full",
                      &room->jid);
        return;
    }

    room->save = r;

    if (room->save_retry.timer_set) {
        ngx_del_timer(&room->save_retry);
    }

    return;

failed:

    free(config);
    free(affils);

    if (!remove || ngx_xmpp_muc_conf->db_thread_pool) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "xmpp: room \"%V\" not saved", &room->jid);
    }
}


/*
 * A save that failed or timed out (and was rolled back, see
 * ngx_xmpp_db.c) is tried again a second later, with the room as it
 * is then: the room's state in MariaDB must catch up, or a restart
 * would bring back an older room.
 */
static void
ngx_xmpp_muc_save_done(ngx_xmpp_db_req_t *r)
{
    ngx_xmpp_muc_room_t  *room;

    room = r->data;
    room->save = NULL;

    if (r->rc != NGX_XMPP_DB_OK) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "xmpp: room \"%V\" not saved (%ui): %s; "
                      "trying again", &room->jid, r->rc, r->err);

        room->dirty = 0;

        if (!room->save_retry.timer_set) {
            room->save_retry.handler = ngx_xmpp_muc_save_again;
            room->save_retry.data = room;
            room->save_retry.log = ngx_cycle->log;
            room->save_retry.cancelable = 1;
            ngx_add_timer(&room->save_retry, NGX_XMPP_MUC_SAVE_RETRY);
        }

        return;
    }

    if (room->dirty) {
        ngx_xmpp_muc_save(room);
    }

    ngx_xmpp_muc_check(room);
}


static void
ngx_xmpp_muc_save_again(ngx_event_t *ev)
{
    ngx_xmpp_muc_room_t  *room = ev->data;

    ngx_xmpp_muc_save(room);
    ngx_xmpp_muc_check(room);
}


static int
ngx_xmpp_muc_load_row(ngx_xmpp_db_req_t *r, ngx_str_t *cols, ngx_uint_t n)
{
    ngx_xmpp_muc_load_t  *ld;

    ld = r->ctx;

    if (n != 4) {
        return -1;
    }

#define ngx_xmpp_muc_strdup(col)                                           \
    (cols[col].data ? strndup((char *) cols[col].data, cols[col].len)      \
                    : strdup(""))

    ld->config = ngx_xmpp_muc_strdup(0);
    ld->affils = ngx_xmpp_muc_strdup(1);
    ld->subject = ngx_xmpp_muc_strdup(2);
    ld->subject_from = ngx_xmpp_muc_strdup(3);

#undef ngx_xmpp_muc_strdup

    if (ld->config == NULL || ld->affils == NULL || ld->subject == NULL
        || ld->subject_from == NULL)
    {
        return -1;
    }

    ld->found = 1;

    return 0;
}


/* a history row: the payload of a muc_message record, newest first */
static int
ngx_xmpp_muc_hist_row(ngx_xmpp_db_req_t *r, ngx_str_t *cols, ngx_uint_t n)
{
    json_t               *rec, *st, *ts;
    ngx_xmpp_muc_load_t  *ld;

    ld = r->ctx;

    if (n != 1 || cols[0].data == NULL || ld->nhist >= ld->history) {
        return 0;
    }

    rec = json_loadb((char *) cols[0].data, cols[0].len, 0, NULL);
    if (rec == NULL) {
        return 0;
    }

    st = json_object_get(json_object_get(rec, "params"), "stanza");
    ts = json_object_get(rec, "ts_utc_us");

    if (json_is_string(st) && json_is_integer(ts)) {
        ld->hist[ld->nhist] = strndup(json_string_value(st),
                                      json_string_length(st));
        if (ld->hist[ld->nhist]) {
            ld->hist_ts[ld->nhist] = json_integer_value(ts);
            ld->nhist++;
        }
    }

    json_decref(rec);

    return 0;
}


static int
ngx_xmpp_muc_load_run(MYSQL *conn, ngx_xmpp_db_req_t *r)
{
    int                   rc;
    u_char                limit[NGX_INT_T_LEN];
    MYSQL_STMT           *stmt;
    ngx_str_t             p[2];
    ngx_xmpp_muc_load_t  *ld;

    ld = r->ctx;
    p[0] = ld->jid;

    stmt = ngx_xmpp_db_exec(conn, r,
                            "SELECT config, affiliations, subject,"
                            " subject_from FROM muc_room WHERE jid = ?",
                            p, 1);
    if (stmt == NULL) {
        return -1;
    }

    rc = ngx_xmpp_db_rows(stmt, r, ngx_xmpp_muc_load_row);
    (void) mysql_stmt_close(stmt);

    if (rc != 0 || !ld->found || ld->history == 0) {
        return rc;
    }

    ld->hist = calloc(ld->history, sizeof(char *));
    ld->hist_ts = calloc(ld->history, sizeof(int64_t));
    if (ld->hist == NULL || ld->hist_ts == NULL) {
        return -1;
    }

    /*
     * History on join survives a restart through the audit records in
     * MariaDB (one source of truth); what the shipper has not moved yet
     * is missing until it has (docs/muc.md).
     */
    p[1].data = limit;
    p[1].len = ngx_sprintf(limit, "%ui", ld->history) - limit;

    stmt = ngx_xmpp_db_exec(conn, r,
                            "SELECT payload FROM audit_record"
                            " WHERE peer = ? AND event = 'muc_message'"
                            " ORDER BY ts_utc_us DESC"
                            " LIMIT ?", p, 2);
    if (stmt == NULL) {
        return -1;
    }

    rc = ngx_xmpp_db_rows(stmt, r, ngx_xmpp_muc_hist_row);
    (void) mysql_stmt_close(stmt);

    return rc;
}


static void
ngx_xmpp_muc_load_free(ngx_xmpp_db_req_t *r)
{
    ngx_uint_t            i;
    ngx_xmpp_muc_load_t  *ld;

    ld = r->ctx;

    free(ld->config);
    free(ld->affils);
    free(ld->subject);
    free(ld->subject_from);

    for (i = 0; ld->hist && i < ld->nhist; i++) {
        free(ld->hist[i]);
    }

    free(ld->hist);
    free(ld->hist_ts);
}


static ngx_int_t
ngx_xmpp_muc_load_apply(ngx_xmpp_muc_room_t *room, ngx_xmpp_muc_load_t *ld)
{
    json_t       *c, *a, *v;
    ngx_int_t     af;
    ngx_str_t     s, nick;
    const char   *key;
    ngx_uint_t    i;

    c = json_loads(ld->config, 0, NULL);
    a = json_loads(ld->affils, 0, NULL);

    if (!json_is_object(c) || !json_is_object(a)) {
        json_decref(c);
        json_decref(a);
        return NGX_ERROR;
    }

#define ngx_xmpp_muc_jstr(name, field)                                     \
    v = json_object_get(c, name);                                          \
    if (json_is_string(v)) {                                               \
        s.data = (u_char *) json_string_value(v);                          \
        s.len = json_string_length(v);                                     \
        (void) ngx_xmpp_muc_dup(&room->conf.field, &s);                    \
    }

    ngx_xmpp_muc_jstr("name", name);
    ngx_xmpp_muc_jstr("desc", desc);
    ngx_xmpp_muc_jstr("password", password);

#undef ngx_xmpp_muc_jstr

    room->conf.persistent = json_is_true(json_object_get(c, "persistent"));
    room->conf.members_only = json_is_true(json_object_get(c,
                                                           "members_only"));
    room->conf.semi_anonymous = json_is_true(json_object_get(c,
                                                      "semi_anonymous"));
    room->conf.moderated = json_is_true(json_object_get(c, "moderated"));
    room->conf.public = json_is_true(json_object_get(c, "public"));
    room->conf.change_subject = json_is_true(json_object_get(c,
                                                     "change_subject"));
    room->conf.allow_invites = json_is_true(json_object_get(c,
                                                    "allow_invites"));

    v = json_object_get(c, "max_users");
    if (json_is_integer(v) && json_integer_value(v) > 0) {
        room->conf.max_users = ngx_min((ngx_uint_t) json_integer_value(v),
                                       ngx_xmpp_muc_conf->muc_max_occupants);
    }

    json_object_foreach(a, key, v) {
        s.data = (u_char *) json_string_value(v);
        s.len = s.data ? ngx_strlen(s.data) : 0;
        af = ngx_xmpp_muc_affil_parse(&s);

        if (af != NGX_ERROR) {
            s.data = (u_char *) key;
            s.len = ngx_strlen(key);
            (void) ngx_xmpp_muc_set_affiliation(room, &s, af);
        }
    }

    json_decref(c);
    json_decref(a);

    if (ld->subject[0]) {
        s.data = (u_char *) ld->subject;
        s.len = ngx_strlen(ld->subject);
        nick.data = (u_char *) ld->subject_from;
        nick.len = ngx_strlen(ld->subject_from);
        (void) ngx_xmpp_muc_dup(&room->subject, &s);
        (void) ngx_xmpp_muc_dup(&room->subject_from, &nick);
    }

    for (i = ld->nhist; i > 0; i--) {
        ngx_xmpp_muc_history_add(room, ld->hist_ts[i - 1],
                                 (u_char *) ld->hist[i - 1],
                                 ngx_strlen(ld->hist[i - 1]));
    }

    return NGX_OK;
}


static void
ngx_xmpp_muc_load_done(ngx_xmpp_db_req_t *r)
{
    ngx_uint_t            ok;
    ngx_xmpp_muc_load_t  *ld;
    ngx_xmpp_muc_room_t  *room;

    room = r->data;
    room->save = NULL;
    ld = r->ctx;
    ok = (r->rc == NGX_XMPP_DB_OK);

    if (!ok) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "xmpp: room \"%V\" not loaded (%ui): %s", &room->jid,
                      r->rc, r->rc == NGX_XMPP_DB_TIMEOUT ? "timeout"
                                                          : r->err);

    } else if (ld->found
               && ngx_xmpp_muc_load_apply(room, ld) == NGX_OK)
    {
        room->state = NGX_XMPP_MUC_ROOM_READY;
        ngx_xmpp_registry_room_hide(ngx_xmpp_muc_conf, &room->jid,
                                    !room->conf.public);

    } else {
        room->state = NGX_XMPP_MUC_ROOM_ABSENT;
    }

    ngx_xmpp_muc_room_loaded(room, ok);
}


/*
 * NGX_OK: the room is being looked for in MariaDB and room_loaded()
 * follows; NGX_DECLINED: no MariaDB for chat features, rooms are
 * temporary only; NGX_ERROR: the database queue is full.
 */
ngx_int_t
ngx_xmpp_muc_load(ngx_xmpp_muc_room_t *room)
{
    ngx_xmpp_db_req_t    *r;
    ngx_xmpp_muc_load_t  *ld;

    if (room->jid.len > 512) {
        return NGX_DECLINED;
    }

    r = ngx_xmpp_db_create(ngx_xmpp_muc_conf,
                           sizeof(ngx_xmpp_muc_load_t) + room->jid.len,
                           ngx_cycle->log);
    if (r == NULL) {
        return NGX_DECLINED;
    }

    ld = r->ctx;
    ld->jid.data = (u_char *) (ld + 1);
    ld->jid.len = room->jid.len;
    ngx_memcpy(ld->jid.data, room->jid.data, room->jid.len);
    ld->history = ngx_xmpp_muc_conf->muc_history;

    r->run = ngx_xmpp_muc_load_run;
    r->done = ngx_xmpp_muc_load_done;
    r->cleanup = ngx_xmpp_muc_load_free;
    r->data = room;

    if (ngx_xmpp_db_post(r) != NGX_OK) {
        ngx_xmpp_db_destroy(r);
        return NGX_ERROR;
    }

    /* the load holds the room as a save would: check() waits for it */
    room->save = r;
    room->state = NGX_XMPP_MUC_ROOM_LOADING;

    return NGX_OK;
}
