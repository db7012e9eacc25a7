
/*
 * Retention and legal holds (docs/compliance.md "Retention and legal
 * holds", COMPLIANCE.md 2 and 7.4).
 *
 * Policies: global, per room and per user, each with a duration for
 * messages (message records and the MUC's records of joins, leaves,
 * nicks, room and private messages and subjects) and one for sign-in
 * events (signin, session_end); a compliance profile sets floors no
 * policy may go below.  Other records (admin actions, exports, policy
 * and hold changes) are never deleted: the auditors' trail stays.
 *
 * Which duration applies to a record: a room's record, the room's
 * policy; a 1:1 message, the longer of its sender's and its peer's user
 * policies (each falling back to the global one): a record is deleted
 * only when every party's policy lets it go.  Then the profile's floor.
 *
 * Legal holds are matter-scoped (Google Vault's model): custodians,
 * rooms and a time range.  A record whose sender or peer is a custodian
 * of an active hold, or whose room is one of its rooms, inside its time
 * range, is never deleted; releasing the hold returns the record to
 * retention, it is not purged at once.
 *
 * A retention run deletes in batches of one journal's rows, each batch
 * one transaction that also writes one tombstone per row (seq,
 * prev_hash, entry_hash) and a note signed with the audit key over the
 * batch, so `verify` checks the chain across the gap and knows who made
 * it.  Every policy change, hold change and run is an admin record
 * (caud_admin.c).
 */


#define _GNU_SOURCE

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <mysql.h>
#include <openssl/evp.h>

#include "caud_comply.h"


#define CAUD_R_BATCH    1000
#define CAUD_R_DAY_US   (86400LL * 1000000)
#define CAUD_R_MAXDAYS  36600            /* 100 years */
#define CAUD_R_LIST     64               /* custodians, rooms per hold */


typedef struct {
    const char  *name;
    int          messages;     /* floor in days, 0: none */
    int          signins;
} caud_profile_t;

/* COMPLIANCE.md 2.2: SEC 17a-4 / FINRA 4511 six years, MiFID II five,
 * China's Cybersecurity Law art. 21(3) six months of logs */
static const caud_profile_t  caud_profiles[] = {
    { "none", 0, 0 },
    { "sec", 2190, 0 },
    { "mifid", 1825, 0 },
    { "cn", 0, 180 },
};


static void
caud_rerr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
caud_rerr(char *err, size_t errlen, const char *fmt, ...)
{
    va_list  ap;

    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}


static int
caud_rq(MYSQL *m, const char *sql, char *err, size_t errlen)
{
    if (mysql_real_query(m, sql, strlen(sql)) != 0) {
        caud_rerr(err, errlen, "mariadb: %s", mysql_error(m));
        return -1;
    }

    return 0;
}


/* 'escaped' into buf; -1 when it does not fit */
static int
caud_resc(MYSQL *m, char *buf, size_t size, const char *s)
{
    size_t  n;

    n = strlen(s);
    if (2 * n + 3 > size) {
        return -1;
    }

    buf[0] = '\'';
    n = mysql_real_escape_string(m, buf + 1, s, n);
    buf[n + 1] = '\'';
    buf[n + 2] = '\0';

    return 0;
}


static const caud_profile_t *
caud_profile(MYSQL *m, char *err, size_t errlen)
{
    size_t       i;
    MYSQL_RES   *res;
    MYSQL_ROW    row;
    const caud_profile_t  *p;

    if (caud_rq(m, "SELECT value FROM compliance_setting WHERE name = "
                "'profile'", err, errlen) != 0
        || (res = mysql_store_result(m)) == NULL)
    {
        caud_rerr(err, errlen, "mariadb: %s", mysql_error(m));
        return NULL;
    }

    p = &caud_profiles[0];
    row = mysql_fetch_row(res);

    for (i = 0; row && i < sizeof(caud_profiles) / sizeof(caud_profiles[0]);
         i++)
    {
        if (strcmp(row[0], caud_profiles[i].name) == 0) {
            p = &caud_profiles[i];
        }
    }

    mysql_free_result(res);

    return p;
}


/* an admin record: actor, object, params, prior and resulting state */
static int
caud_raudit(const caud_admin_t *adm, const char *actor, const char *event,
    const char *otype, const char *oid, json_t *params, json_t *prior,
    json_t *result, char *err, size_t errlen)
{
    int            rc;
    json_t        *rec;
    caud_actor_t   a;

    rec = caud_record_new(event, CAUD_SUCCESS, caud_now_us());
    memset(&a, 0, sizeof(a));
    a.user = actor;
    a.transport = "admin";

    rc = -1;

    if (rec && caud_record_set_actor(rec, &a) == 0
        && caud_record_set_object(rec, otype, oid) == 0
        && (params == NULL
            || json_object_set(rec, "params", params) == 0)
        && (prior == NULL
            || json_object_set(rec, "prior_state", prior) == 0)
        && (result == NULL
            || json_object_set(rec, "resulting_state", result) == 0))
    {
        rc = caud_admin_record(adm, rec, NULL, err, errlen);

    } else {
        caud_rerr(err, errlen, "audit record: out of memory");
    }

    json_decref(rec);
    json_decref(params);
    json_decref(prior);
    json_decref(result);

    return rc;
}


int
caud_profile_set(const caud_db_opts_t *db, const caud_admin_t *adm,
    const char *actor, const char *profile, char *err, size_t errlen)
{
    int          rc;
    char         sql[512], esc[128];
    size_t       i;
    MYSQL       *m;
    const caud_profile_t  *old, *p;

    p = NULL;
    for (i = 0; i < sizeof(caud_profiles) / sizeof(caud_profiles[0]); i++) {
        if (strcmp(profile, caud_profiles[i].name) == 0) {
            p = &caud_profiles[i];
        }
    }

    if (p == NULL) {
        caud_rerr(err, errlen, "unknown profile \"%.64s\" (none, sec, "
                  "mifid, cn)", profile);
        return -1;
    }

    m = caud_db_connect(db, err, errlen);
    if (m == NULL) {
        return -1;
    }

    rc = -1;
    old = caud_profile(m, err, errlen);
    if (old == NULL || caud_resc(m, esc, sizeof(esc), p->name) != 0) {
        goto done;
    }

    snprintf(sql, sizeof(sql), "REPLACE INTO compliance_setting (name, "
             "value, updated_at) VALUES ('profile', %s, UTC_TIMESTAMP(6))",
             esc);

    if (caud_rq(m, "START TRANSACTION", err, errlen) != 0
        || caud_rq(m, sql, err, errlen) != 0
        || caud_raudit(adm, actor, "compliance_profile_set", "setting",
                       "profile", NULL,
                       json_pack("{s:s}", "profile", old->name),
                       json_pack("{s:s,s:i,s:i}", "profile", p->name,
                                 "messages_floor_days", p->messages,
                                 "signins_floor_days", p->signins),
                       err, errlen) != 0
        || caud_rq(m, "COMMIT", err, errlen) != 0)
    {
        goto done;
    }

    rc = 0;

done:

    mysql_close(m);

    return rc;
}


static json_t *
caud_rpolicy_json(const char *scope, const char *target, int md, int sd)
{
    return json_pack("{s:s,s:s,s:i,s:i}", "scope", scope, "target", target,
                     "messages_days", md, "signins_days", sd);
}


/* the policy row as JSON, or JSON null when there is none */
static json_t *
caud_rpolicy_get(MYSQL *m, const char *scope, const char *target,
    char *err, size_t errlen)
{
    char        sql[1200], s[32], t[600];
    json_t     *j;
    MYSQL_RES  *res;
    MYSQL_ROW   row;

    if (caud_resc(m, s, sizeof(s), scope) != 0
        || caud_resc(m, t, sizeof(t), target) != 0)
    {
        caud_rerr(err, errlen, "scope or target too long");
        return NULL;
    }

    snprintf(sql, sizeof(sql), "SELECT messages_days, signins_days FROM "
             "retention_policy WHERE scope = %s AND target = %s", s, t);

    if (caud_rq(m, sql, err, errlen) != 0
        || (res = mysql_store_result(m)) == NULL)
    {
        caud_rerr(err, errlen, "mariadb: %s", mysql_error(m));
        return NULL;
    }

    row = mysql_fetch_row(res);
    j = row ? caud_rpolicy_json(scope, target, atoi(row[0]), atoi(row[1]))
            : json_null();
    mysql_free_result(res);

    return j;
}


static int
caud_rdays_ok(int d, int floor, const char *what, char *err, size_t errlen)
{
    if (d < CAUD_DAYS_FOREVER || d == 0 || d > CAUD_R_MAXDAYS) {
        caud_rerr(err, errlen, "%s: %d days (1..%d, or -1 to keep for "
                  "ever)", what, d, CAUD_R_MAXDAYS);
        return -1;
    }

    if (d != CAUD_DAYS_FOREVER && d < floor) {
        caud_rerr(err, errlen, "%s: %d days is below the compliance "
                  "profile's floor of %d days", what, d, floor);
        return -1;
    }

    return 0;
}


static int
caud_rscope_ok(const char *scope, const char *target, char *err,
    size_t errlen)
{
    if (strcmp(scope, "global") != 0 && strcmp(scope, "room") != 0
        && strcmp(scope, "user") != 0)
    {
        caud_rerr(err, errlen, "scope must be global, room or user");
        return -1;
    }

    if ((strcmp(scope, "global") == 0) != (target[0] == '\0')
        || strlen(target) > 255 || strchr(target, '/') != NULL)
    {
        caud_rerr(err, errlen, "a room or user policy names a bare JID "
                  "(at most 255 bytes), a global one none");
        return -1;
    }

    return 0;
}


int
caud_policy_set(const caud_db_opts_t *db, const caud_admin_t *adm,
    const char *actor, const caud_policy_t *p, char *err, size_t errlen)
{
    int          rc;
    char         sql[1400], s[32], t[600];
    MYSQL       *m;
    json_t      *prior;
    const caud_profile_t  *pr;

    if (caud_rscope_ok(p->scope, p->target, err, errlen) != 0) {
        return -1;
    }

    m = caud_db_connect(db, err, errlen);
    if (m == NULL) {
        return -1;
    }

    rc = -1;
    pr = caud_profile(m, err, errlen);

    if (pr == NULL
        || caud_rdays_ok(p->messages_days, pr->messages, "messages", err,
                         errlen) != 0
        || caud_rdays_ok(p->signins_days, pr->signins, "sign-in events",
                         err, errlen) != 0
        || caud_resc(m, s, sizeof(s), p->scope) != 0
        || caud_resc(m, t, sizeof(t), p->target) != 0
        || caud_rq(m, "START TRANSACTION", err, errlen) != 0
        || (prior = caud_rpolicy_get(m, p->scope, p->target, err, errlen))
           == NULL)
    {
        goto done;
    }

    snprintf(sql, sizeof(sql), "REPLACE INTO retention_policy (scope, "
             "target, messages_days, signins_days, updated_at) VALUES "
             "(%s, %s, %d, %d, UTC_TIMESTAMP(6))", s, t, p->messages_days,
             p->signins_days);

    if (caud_rq(m, sql, err, errlen) != 0) {
        json_decref(prior);
        goto done;
    }

    if (caud_raudit(adm, actor, "retention_policy_set", "retention_policy",
                    p->target[0] ? p->target : "global", NULL, prior,
                    caud_rpolicy_json(p->scope, p->target, p->messages_days,
                                      p->signins_days), err, errlen) != 0
        || caud_rq(m, "COMMIT", err, errlen) != 0)
    {
        goto done;
    }

    rc = 0;

done:

    mysql_close(m);

    return rc;
}


int
caud_policy_remove(const caud_db_opts_t *db, const caud_admin_t *adm,
    const char *actor, const char *scope, const char *target, char *err,
    size_t errlen)
{
    int      rc;
    char     sql[1400], s[32], t[600];
    MYSQL   *m;
    json_t  *prior;

    if (caud_rscope_ok(scope, target, err, errlen) != 0) {
        return -1;
    }

    m = caud_db_connect(db, err, errlen);
    if (m == NULL) {
        return -1;
    }

    rc = -1;

    if (caud_resc(m, s, sizeof(s), scope) != 0
        || caud_resc(m, t, sizeof(t), target) != 0
        || caud_rq(m, "START TRANSACTION", err, errlen) != 0
        || (prior = caud_rpolicy_get(m, scope, target, err, errlen)) == NULL)
    {
        goto done;
    }

    if (json_is_null(prior)) {
        caud_rerr(err, errlen, "no %s policy%s%s", scope, target[0] ? " for "
                  : "", target);
        json_decref(prior);
        goto done;
    }

    snprintf(sql, sizeof(sql), "DELETE FROM retention_policy WHERE scope = "
             "%s AND target = %s", s, t);

    if (caud_rq(m, sql, err, errlen) != 0) {
        json_decref(prior);
        goto done;
    }

    if (caud_raudit(adm, actor, "retention_policy_remove",
                    "retention_policy", target[0] ? target : "global", NULL,
                    prior, json_null(), err, errlen) != 0
        || caud_rq(m, "COMMIT", err, errlen) != 0)
    {
        goto done;
    }

    rc = 0;

done:

    mysql_close(m);

    return rc;
}


/* ------------------------------------------------------------------ */
/* holds */

/* "a@x, b@x" -> a JSON array of bare JIDs; NULL on a bad one */
static json_t *
caud_rlist(const char *list, const char *what, char *err, size_t errlen)
{
    char        *copy, *tok, *save, *p, *e;
    json_t      *a;

    a = json_array();
    copy = strdup(list ? list : "");
    if (a == NULL || copy == NULL) {
        caud_rerr(err, errlen, "out of memory");
        json_decref(a);
        free(copy);
        return NULL;
    }

    for (tok = strtok_r(copy, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save))
    {
        for (p = tok; *p == ' ' || *p == '\t'; p++) { /* void */ }
        for (e = p + strlen(p); e > p && (e[-1] == ' ' || e[-1] == '\t');
             e--) { /* void */ }
        *e = '\0';

        if (*p == '\0') {
            continue;
        }

        if (strlen(p) > 255 || strchr(p, '/') || strchr(p, '@') == NULL
            || json_array_size(a) >= CAUD_R_LIST)
        {
            caud_rerr(err, errlen, "%s: \"%.64s\" is not a bare JID (or "
                      "more than %d of them)", what, p, CAUD_R_LIST);
            json_decref(a);
            free(copy);
            return NULL;
        }

        json_array_append_new(a, json_string(p));
    }

    free(copy);

    return a;
}


static json_t *
caud_rhold_json(const caud_hold_t *h, json_t *cust, json_t *rooms)
{
    return json_pack("{s:s,s:s,s:O,s:O,s:I,s:I}", "matter", h->matter,
                     "description", h->description ? h->description : "",
                     "custodians", cust, "rooms", rooms,
                     "since_us", (json_int_t) h->since_us,
                     "until_us", (json_int_t) h->until_us);
}


static int
caud_rhold_scope(MYSQL *m, uint64_t id, const char *kind, json_t *list,
    char *err, size_t errlen)
{
    char     sql[1024], j[600];
    size_t   i;
    json_t  *v;

    json_array_foreach(list, i, v) {
        if (caud_resc(m, j, sizeof(j), json_string_value(v)) != 0) {
            return -1;
        }

        snprintf(sql, sizeof(sql), "INSERT IGNORE INTO legal_hold_scope "
                 "(hold_id, kind, jid) VALUES (%" PRIu64 ", '%s', %s)", id,
                 kind, j);

        if (caud_rq(m, sql, err, errlen) != 0) {
            return -1;
        }
    }

    return 0;
}


int
caud_hold_create(const caud_db_opts_t *db, const caud_admin_t *adm,
    const char *actor, const caud_hold_t *h, char *err, size_t errlen)
{
    int          rc;
    char        *sql, mt[600], ds[2100], by[600];
    MYSQL       *m;
    json_t      *cust, *rooms;
    uint64_t     id;
    MYSQL_RES   *res;

    if (h->matter == NULL || h->matter[0] == '\0' || strlen(h->matter) > 255
        || (h->description && strlen(h->description) > 1000))
    {
        caud_rerr(err, errlen, "a hold needs a matter name (at most 255 "
                  "bytes; a description at most 1000)");
        return -1;
    }

    if (h->since_us && h->until_us && h->since_us >= h->until_us) {
        caud_rerr(err, errlen, "the hold's range ends before it starts");
        return -1;
    }

    cust = caud_rlist(h->custodians, "custodians", err, errlen);
    rooms = cust ? caud_rlist(h->rooms, "rooms", err, errlen) : NULL;
    if (rooms == NULL) {
        json_decref(cust);
        return -1;
    }

    if (json_array_size(cust) + json_array_size(rooms) == 0) {
        caud_rerr(err, errlen, "a hold needs custodians or rooms");
        json_decref(cust);
        json_decref(rooms);
        return -1;
    }

    m = caud_db_connect(db, err, errlen);
    if (m == NULL) {
        json_decref(cust);
        json_decref(rooms);
        return -1;
    }

    rc = -1;
    sql = malloc(8192);

    if (sql == NULL
        || caud_resc(m, mt, sizeof(mt), h->matter) != 0
        || caud_resc(m, ds, sizeof(ds), h->description ? h->description
                                                       : "") != 0
        || caud_resc(m, by, sizeof(by), actor) != 0
        || caud_rq(m, "START TRANSACTION", err, errlen) != 0)
    {
        goto done;
    }

    /* one active hold per matter name */
    snprintf(sql, 8192, "SELECT id FROM legal_hold WHERE matter = %s AND "
             "released_at IS NULL FOR UPDATE", mt);
    if (caud_rq(m, sql, err, errlen) != 0
        || (res = mysql_store_result(m)) == NULL)
    {
        goto done;
    }

    id = mysql_num_rows(res);
    mysql_free_result(res);

    if (id) {
        caud_rerr(err, errlen, "matter \"%s\" already has an active hold",
                  h->matter);
        goto done;
    }

    snprintf(sql, 8192, "INSERT INTO legal_hold (matter, description, "
             "since_us, until_us, created_at, created_by) VALUES (%s, %s, "
             "%s%" PRId64 ", %s%" PRId64 ", UTC_TIMESTAMP(6), %s)", mt, ds,
             h->since_us ? "" : "NULL + ", h->since_us,
             h->until_us ? "" : "NULL + ", h->until_us, by);

    if (caud_rq(m, sql, err, errlen) != 0) {
        goto done;
    }

    id = mysql_insert_id(m);

    if (caud_rhold_scope(m, id, "user", cust, err, errlen) != 0
        || caud_rhold_scope(m, id, "room", rooms, err, errlen) != 0
        || caud_raudit(adm, actor, "legal_hold_create", "legal_hold",
                       h->matter, NULL, json_null(),
                       caud_rhold_json(h, cust, rooms), err, errlen) != 0
        || caud_rq(m, "COMMIT", err, errlen) != 0)
    {
        goto done;
    }

    rc = 0;

done:

    free(sql);
    json_decref(cust);
    json_decref(rooms);
    mysql_close(m);

    return rc;
}


int
caud_hold_release(const caud_db_opts_t *db, const caud_admin_t *adm,
    const char *actor, const char *matter, char *err, size_t errlen)
{
    int     rc;
    char    sql[1600], mt[600], by[600];
    MYSQL  *m;

    m = caud_db_connect(db, err, errlen);
    if (m == NULL) {
        return -1;
    }

    rc = -1;

    if (strlen(matter) > 255 || caud_resc(m, mt, sizeof(mt), matter) != 0
        || caud_resc(m, by, sizeof(by), actor) != 0)
    {
        caud_rerr(err, errlen, "matter or actor too long");
        goto done;
    }

    snprintf(sql, sizeof(sql), "UPDATE legal_hold SET released_at = "
             "UTC_TIMESTAMP(6), released_by = %s WHERE matter = %s AND "
             "released_at IS NULL", by, mt);

    if (caud_rq(m, "START TRANSACTION", err, errlen) != 0
        || caud_rq(m, sql, err, errlen) != 0)
    {
        goto done;
    }

    if (mysql_affected_rows(m) != 1) {
        caud_rerr(err, errlen, "matter \"%s\" has no active hold", matter);
        goto done;
    }

    /* released data returns to retention; nothing is purged here */
    if (caud_raudit(adm, actor, "legal_hold_release", "legal_hold", matter,
                    NULL, json_pack("{s:s}", "state", "active"),
                    json_pack("{s:s}", "state", "released"), err, errlen)
        != 0
        || caud_rq(m, "COMMIT", err, errlen) != 0)
    {
        goto done;
    }

    rc = 0;

done:

    mysql_close(m);

    return rc;
}


static json_t *
caud_rrows(MYSQL *m, const char *sql, const char **names, size_t n,
    char *err, size_t errlen)
{
    size_t      i;
    json_t     *a, *o;
    MYSQL_RES  *res;
    MYSQL_ROW   row;

    if (caud_rq(m, sql, err, errlen) != 0
        || (res = mysql_store_result(m)) == NULL)
    {
        caud_rerr(err, errlen, "mariadb: %s", mysql_error(m));
        return NULL;
    }

    a = json_array();

    while (a && (row = mysql_fetch_row(res)) != NULL) {
        o = json_object();
        for (i = 0; o && i < n; i++) {
            json_object_set_new(o, names[i], row[i] ? json_string(row[i])
                                                    : json_null());
        }
        json_array_append_new(a, o);
    }

    mysql_free_result(res);

    return a;
}


json_t *
caud_retention_show(const caud_db_opts_t *db, char *err, size_t errlen)
{
    MYSQL       *m;
    json_t      *o, *pol, *holds;
    const caud_profile_t  *p;
    static const char  *pn[] = { "scope", "target", "messages_days",
                                 "signins_days", "updated_at" };
    static const char  *hn[] = { "matter", "description", "since_us",
                                 "until_us", "created_at", "created_by",
                                 "released_at", "released_by",
                                 "custodians", "rooms" };

    m = caud_db_connect(db, err, errlen);
    if (m == NULL) {
        return NULL;
    }

    o = NULL;
    p = caud_profile(m, err, errlen);
    pol = p ? caud_rrows(m, "SELECT scope, target, messages_days, "
                         "signins_days, updated_at FROM retention_policy "
                         "ORDER BY scope, target", pn, 5, err, errlen)
            : NULL;
    holds = pol ? caud_rrows(m, "SELECT h.matter, h.description, "
                             "h.since_us, h.until_us, h.created_at, "
                             "h.created_by, h.released_at, h.released_by, "
                             "(SELECT GROUP_CONCAT(jid ORDER BY jid) FROM "
                             "legal_hold_scope s WHERE s.hold_id = h.id AND "
                             "s.kind = 'user'), (SELECT GROUP_CONCAT(jid "
                             "ORDER BY jid) FROM legal_hold_scope s WHERE "
                             "s.hold_id = h.id AND s.kind = 'room') FROM "
                             "legal_hold h ORDER BY h.id", hn, 10, err,
                             errlen)
                : NULL;

    if (holds) {
        o = json_pack("{s:s,s:i,s:i,s:o,s:o}", "profile", p->name,
                      "messages_floor_days", p->messages,
                      "signins_floor_days", p->signins, "policies", pol,
                      "holds", holds);
    } else {
        json_decref(pol);
    }

    mysql_close(m);

    return o;
}


/* ------------------------------------------------------------------ */
/* the retention run */

typedef struct {
    char     *jid;
    int       messages;
    int       signins;
} caud_rpol_t;

typedef struct {
    uint64_t  id;
    int64_t   since;
    int64_t   until;
    json_t   *users;            /* object: jid -> true */
    json_t   *rooms;
} caud_rhold_t;

typedef struct {
    const caud_db_opts_t   *db;
    const caud_admin_t     *adm;
    MYSQL                  *rd;          /* streams the candidates */
    MYSQL                  *wr;          /* deletes */
    caud_signer_t          *signer;
    const caud_profile_t   *profile;
    int                     g_messages;  /* global; -1 for ever */
    int                     g_signins;
    json_t                 *users;       /* jid -> [messages, signins] */
    json_t                 *rooms;
    caud_rhold_t           *holds;
    size_t                  nholds;
    int64_t                 now;
    size_t                  batch;

    uint32_t                writer;      /* of the open batch */
    size_t                  n;
    uint64_t               *seqs;
    uint8_t                *hashes;      /* prev, entry per row */
    int64_t                *ts;
    char                  (*events)[33];

    caud_retention_stats_t *st;
    char                   *err;
    size_t                  errlen;
} caud_run_t;


static int
caud_rload(caud_run_t *r)
{
    MYSQL_RES  *res;
    MYSQL_ROW   row;
    json_t     *map, *h;
    size_t      i;

    r->g_messages = CAUD_DAYS_FOREVER;
    r->g_signins = CAUD_DAYS_FOREVER;
    r->users = json_object();
    r->rooms = json_object();

    if (caud_rq(r->rd, "SELECT scope, target, messages_days, signins_days "
                "FROM retention_policy", r->err, r->errlen) != 0
        || (res = mysql_store_result(r->rd)) == NULL)
    {
        return -1;
    }

    while ((row = mysql_fetch_row(res)) != NULL) {
        if (strcmp(row[0], "global") == 0) {
            r->g_messages = atoi(row[2]);
            r->g_signins = atoi(row[3]);
            continue;
        }

        map = strcmp(row[0], "room") == 0 ? r->rooms : r->users;
        json_object_set_new(map, row[1], json_pack("[i,i]", atoi(row[2]),
                                                   atoi(row[3])));
    }

    mysql_free_result(res);

    if (caud_rq(r->rd, "SELECT h.id, h.since_us, h.until_us, s.kind, s.jid "
                "FROM legal_hold h JOIN legal_hold_scope s ON s.hold_id = "
                "h.id WHERE h.released_at IS NULL ORDER BY h.id", r->err,
                r->errlen) != 0
        || (res = mysql_store_result(r->rd)) == NULL)
    {
        return -1;
    }

    r->holds = calloc(mysql_num_rows(res) + 1, sizeof(caud_rhold_t));
    if (r->holds == NULL) {
        mysql_free_result(res);
        return -1;
    }

    h = NULL;
    i = (size_t) -1;
    char  last[32] = "";

    while ((row = mysql_fetch_row(res)) != NULL) {
        if (strcmp(last, row[0]) != 0) {
            snprintf(last, sizeof(last), "%s", row[0]);
            i = r->nholds++;
            r->holds[i].id = strtoull(row[0], NULL, 10);
            r->holds[i].since = row[1] ? strtoll(row[1], NULL, 10) : 0;
            r->holds[i].until = row[2] ? strtoll(row[2], NULL, 10) : 0;
            r->holds[i].users = json_object();
            r->holds[i].rooms = json_object();
        }

        h = strcmp(row[3], "room") == 0 ? r->holds[i].rooms
                                        : r->holds[i].users;
        json_object_set_new(h, row[4], json_true());
    }

    mysql_free_result(res);

    return 0;
}


/* days of a scope's policy, or the global one's */
static int
caud_rdays(json_t *map, const char *jid, int idx, int global)
{
    json_t  *p;

    p = jid ? json_object_get(map, jid) : NULL;

    return p ? (int) json_integer_value(json_array_get(p, idx)) : global;
}


static int
caud_rlonger(int a, int b)
{
    if (a == CAUD_DAYS_FOREVER || b == CAUD_DAYS_FOREVER) {
        return CAUD_DAYS_FOREVER;
    }

    return a > b ? a : b;
}


/* 1: expired and unheld, 2: expired but held, 0: kept */
static int
caud_rjudge(caud_run_t *r, const char *event, const char *user,
    const char *peer, const char *type, int64_t ts)
{
    int      days, room, floor;
    size_t   i;
    caud_rhold_t  *h;

    room = strncmp(event, "muc_", 4) == 0
           || (type && strcmp(type, "groupchat") == 0);

    if (strcmp(event, "signin") == 0 || strcmp(event, "session_end") == 0) {
        days = caud_rdays(r->users, user, 1, r->g_signins);
        floor = r->profile->signins;

    } else if (room) {
        days = caud_rdays(r->rooms, peer, 0, r->g_messages);
        floor = r->profile->messages;

    } else {
        days = caud_rlonger(caud_rdays(r->users, user, 0, r->g_messages),
                            caud_rdays(r->users, peer, 0, r->g_messages));
        floor = r->profile->messages;
    }

    if (days == CAUD_DAYS_FOREVER) {
        return 0;
    }

    if (days < floor) {
        days = floor;
    }

    if (ts >= r->now - days * CAUD_R_DAY_US) {
        return 0;
    }

    for (i = 0; i < r->nholds; i++) {
        h = &r->holds[i];

        if ((h->since && ts < h->since) || (h->until && ts >= h->until)) {
            continue;
        }

        if ((user && json_object_get(h->users, user))
            || (peer && json_object_get(h->users, peer))
            || (peer && json_object_get(h->rooms, peer)))
        {
            return 2;
        }
    }

    return 1;
}


/* X'hex' of n bytes */
static void
caud_rhex(char *buf, const uint8_t *p, size_t n)
{
    size_t  i;

    buf[0] = 'X';
    buf[1] = '\'';
    for (i = 0; i < n; i++) {
        snprintf(buf + 2 + 2 * i, 3, "%02x", p[i]);
    }
    buf[2 + 2 * n] = '\'';
    buf[3 + 2 * n] = '\0';
}


/*
 * The batch's signed note: "<prefix>/<writer>/prune", the batch id, the
 * row count, base64 SHA-256 over the rows (seq as 8 bytes big-endian,
 * prev_hash, entry_hash, in seq order).  verify recomputes it from the
 * tombstones (caud_verify.c).
 */
static int
caud_rnote(caud_run_t *r, uint64_t id, uint8_t digest[32], char *note,
    size_t size, size_t *len)
{
    int           k;
    char          text[CAUD_ORIGIN_MAX + 160], b64[64];
    size_t        i, tl;
    uint8_t       be[8];
    EVP_MD_CTX   *ctx;
    unsigned int  dl;

    ctx = EVP_MD_CTX_new();
    if (ctx == NULL || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(ctx);
        return -1;
    }

    for (i = 0; i < r->n; i++) {
        for (k = 0; k < 8; k++) {
            be[k] = (uint8_t) (r->seqs[i] >> (56 - 8 * k));
        }
        EVP_DigestUpdate(ctx, be, 8);
        EVP_DigestUpdate(ctx, r->hashes + i * 2 * CAUD_HASH_LEN,
                         2 * CAUD_HASH_LEN);
    }

    EVP_DigestFinal_ex(ctx, digest, &dl);
    EVP_MD_CTX_free(ctx);
    EVP_EncodeBlock((unsigned char *) b64, digest, 32);

    tl = snprintf(text, sizeof(text), "%s/%" PRIu32 "/prune\n%" PRIu64
                  "\n%zu\n%s\n", r->adm->origin_prefix, r->writer, id, r->n,
                  b64);

    return caud_note_sign(r->signer, text, tl, note, size, len);
}


/*
 * Inside a batch's transaction: every active hold must be one the run
 * judged with.  The shared locks make a hold created meanwhile wait for
 * this batch's commit (the deletion came first); one created since the
 * run loaded its holds stops the run before anything it covers goes,
 * and the next run judges with it.  A hold released meanwhile is still
 * honoured: that only keeps more.
 */
static int
caud_rholds_unchanged(caud_run_t *r)
{
    size_t      i;
    uint64_t    id;
    MYSQL_ROW   row;
    MYSQL_RES  *res;

    if (caud_rq(r->wr, "SELECT id FROM legal_hold WHERE released_at IS "
                "NULL LOCK IN SHARE MODE", r->err, r->errlen) != 0
        || (res = mysql_store_result(r->wr)) == NULL)
    {
        return -1;
    }

    while ((row = mysql_fetch_row(res)) != NULL) {
        id = strtoull(row[0], NULL, 10);

        for (i = 0; i < r->nholds && r->holds[i].id != id; i++) {
            /* void */
        }

        if (i == r->nholds) {
            caud_rerr(r->err, r->errlen, "legal hold %" PRIu64 " was "
                      "created during the run: stopped, nothing it covers "
                      "was deleted; run again", id);
            mysql_free_result(res);
            return -1;
        }
    }

    mysql_free_result(res);

    return 0;
}


/* one transaction: the batch row, its tombstones, the deletes */
static int
caud_rflush(caud_run_t *r)
{
    int        rc;
    char       node[200], hp[80], he[80], dg[80], note[CAUD_NOTE_MAX];
    char      *sql, *p, esc[CAUD_NOTE_MAX * 2 + 3];
    size_t     i, len, size;
    uint8_t    digest[32];
    uint64_t   id;

    if (r->n == 0) {
        return 0;
    }

    size = r->n * 400 + 4096;
    sql = malloc(size);
    if (sql == NULL) {
        caud_rerr(r->err, r->errlen, "out of memory");
        return -1;
    }

    rc = -1;
    mysql_real_escape_string(r->wr, node, r->adm->node,
                             strlen(r->adm->node));

    snprintf(sql, size, "INSERT INTO audit_prune_batch (node, writer_id, "
             "records, digest, note, pruned_at) VALUES ('%s', %" PRIu32
             ", %zu, REPEAT('\\0', 32), '', UTC_TIMESTAMP(6))", node,
             r->writer, r->n);

    if (caud_rq(r->wr, "START TRANSACTION", r->err, r->errlen) != 0
        || caud_rholds_unchanged(r) != 0
        || caud_rq(r->wr, sql, r->err, r->errlen) != 0)
    {
        goto done;
    }

    id = mysql_insert_id(r->wr);

    if (caud_rnote(r, id, digest, note, sizeof(note), &len) != 0) {
        caud_rerr(r->err, r->errlen, "signing the tombstones failed");
        goto done;
    }

    caud_rhex(dg, digest, 32);
    mysql_real_escape_string(r->wr, esc, note, len);
    snprintf(sql, size, "UPDATE audit_prune_batch SET digest = %s, note = "
             "'%s' WHERE id = %" PRIu64, dg, esc, id);

    if (caud_rq(r->wr, sql, r->err, r->errlen) != 0) {
        goto done;
    }

    p = sql + snprintf(sql, size, "INSERT INTO audit_tombstone (node, "
                       "writer_id, seq, ts_utc_us, event, prev_hash, "
                       "entry_hash, batch_id) VALUES ");
    for (i = 0; i < r->n; i++) {
        caud_rhex(hp, r->hashes + i * 2 * CAUD_HASH_LEN, CAUD_HASH_LEN);
        caud_rhex(he, r->hashes + (i * 2 + 1) * CAUD_HASH_LEN,
                  CAUD_HASH_LEN);
        p += snprintf(p, size - (p - sql), "%s('%s', %" PRIu32 ", %" PRIu64
                      ", %" PRId64 ", '%s', %s, %s, %" PRIu64 ")",
                      i ? ", " : "", node, r->writer, r->seqs[i], r->ts[i],
                      r->events[i], hp, he, id);
    }

    if (caud_rq(r->wr, sql, r->err, r->errlen) != 0) {
        goto done;
    }

    p = sql + snprintf(sql, size, "DELETE FROM audit_record WHERE node = "
                       "'%s' AND writer_id = %" PRIu32 " AND seq IN (",
                       node, r->writer);
    for (i = 0; i < r->n; i++) {
        p += snprintf(p, size - (p - sql), "%s%" PRIu64, i ? "," : "",
                      r->seqs[i]);
    }
    snprintf(p, size - (p - sql), ")");

    if (caud_rq(r->wr, sql, r->err, r->errlen) != 0) {
        goto done;
    }

    if (mysql_affected_rows(r->wr) != r->n) {
        caud_rerr(r->err, r->errlen, "journal %s/%" PRIu32 ": %zu rows to "
                  "delete, %llu deleted (another run?)", r->adm->node,
                  r->writer, r->n, (unsigned long long)
                  mysql_affected_rows(r->wr));
        goto done;
    }

    if (caud_rq(r->wr, "COMMIT", r->err, r->errlen) != 0) {
        goto done;
    }

    r->st->deleted += r->n;
    r->st->batches++;
    r->n = 0;
    rc = 0;

done:

    if (rc != 0) {
        mysql_query(r->wr, "ROLLBACK");
    }

    free(sql);

    return rc;
}


static int
caud_rcandidates(caud_run_t *r)
{
    int             rc, v;
    char            sql[1024], node[200];
    uint32_t        w;
    MYSQL_RES      *res;
    MYSQL_ROW       row;
    unsigned long  *len;

    mysql_real_escape_string(r->rd, node, r->adm->node,
                             strlen(r->adm->node));

    /* the deletable kinds only; the admin journal never */
    snprintf(sql, sizeof(sql), "SELECT writer_id, seq, ts_utc_us, event, "
             "actor_user, peer, msg_type, prev_hash, entry_hash FROM "
             "audit_record WHERE node = '%s' AND event IN ('message', "
             "'muc_create', 'muc_join', 'muc_leave', 'muc_message', "
             "'muc_subject', 'muc_private', 'muc_nick', 'signin', "
             "'session_end') AND "
             "ts_utc_us < %" PRId64 " AND writer_id <> %u ORDER BY "
             "writer_id, seq", node, (int64_t) (r->now - CAUD_R_DAY_US),
             CAUD_ADMIN_WRITER);

    if (caud_rq(r->rd, sql, r->err, r->errlen) != 0
        || (res = mysql_use_result(r->rd)) == NULL)
    {
        return -1;
    }

    rc = 0;

    while ((row = mysql_fetch_row(res)) != NULL) {
        if (rc != 0) {
            continue;
        }

        len = mysql_fetch_lengths(res);
        r->st->examined++;

        v = caud_rjudge(r, row[3], row[4], row[5], row[6],
                        strtoll(row[2], NULL, 10));
        r->st->held += (v == 2);

        if (v != 1 || len[7] != CAUD_HASH_LEN || len[8] != CAUD_HASH_LEN) {
            continue;
        }

        w = strtoul(row[0], NULL, 10);

        if ((r->n && w != r->writer) || r->n == r->batch) {
            rc = caud_rflush(r);
        }

        r->writer = w;
        r->seqs[r->n] = strtoull(row[1], NULL, 10);
        r->ts[r->n] = strtoll(row[2], NULL, 10);
        snprintf(r->events[r->n], 33, "%s", row[3]);
        memcpy(r->hashes + r->n * 2 * CAUD_HASH_LEN, row[7], CAUD_HASH_LEN);
        memcpy(r->hashes + (r->n * 2 + 1) * CAUD_HASH_LEN, row[8],
               CAUD_HASH_LEN);
        r->n++;
    }

    if (rc == 0 && mysql_errno(r->rd)) {
        caud_rerr(r->err, r->errlen, "mariadb: %s", mysql_error(r->rd));
        rc = -1;
    }

    mysql_free_result(res);

    if (rc == 0) {
        rc = caud_rflush(r);
    }

    return rc;
}


int
caud_retention_run(const caud_db_opts_t *db, const caud_admin_t *adm,
    const char *actor, int64_t now_us, size_t batch,
    caud_retention_stats_t *st, char *err, size_t errlen)
{
    int          rc;
    size_t       i;
    caud_run_t   r;

    memset(&r, 0, sizeof(r));
    memset(st, 0, sizeof(caud_retention_stats_t));
    r.db = db;
    r.adm = adm;
    r.st = st;
    r.err = err;
    r.errlen = errlen;
    r.now = now_us ? now_us : caud_now_us();
    r.batch = batch ? batch : CAUD_R_BATCH;
    rc = -1;

    r.seqs = malloc(r.batch * sizeof(uint64_t));
    r.ts = malloc(r.batch * sizeof(int64_t));
    r.hashes = malloc(r.batch * 2 * CAUD_HASH_LEN);
    r.events = malloc(r.batch * 33);

    if (r.seqs == NULL || r.ts == NULL || r.hashes == NULL
        || r.events == NULL)
    {
        caud_rerr(err, errlen, "out of memory");
        goto done;
    }

    r.signer = caud_signer_load(adm->key, adm->origin_prefix, err, errlen);
    if (r.signer == NULL) {
        goto done;
    }

    r.rd = caud_db_connect(db, err, errlen);
    r.wr = r.rd ? caud_db_connect(db, err, errlen) : NULL;
    if (r.wr == NULL) {
        goto done;
    }

    r.profile = caud_profile(r.rd, err, errlen);
    if (r.profile == NULL || caud_rload(&r) != 0
        || caud_rcandidates(&r) != 0)
    {
        goto done;
    }

    rc = caud_raudit(adm, actor, "retention_run", "retention", "run",
                     json_pack("{s:I,s:I,s:I,s:I,s:I}", "now_us",
                               (json_int_t) r.now, "examined",
                               (json_int_t) st->examined, "deleted",
                               (json_int_t) st->deleted, "held",
                               (json_int_t) st->held, "batches",
                               (json_int_t) st->batches),
                     NULL, NULL, err, errlen);

done:

    if (r.rd) {
        mysql_close(r.rd);
    }

    if (r.wr) {
        mysql_close(r.wr);
    }

    for (i = 0; i < r.nholds; i++) {
        json_decref(r.holds[i].users);
        json_decref(r.holds[i].rooms);
    }

    free(r.holds);
    json_decref(r.users);
    json_decref(r.rooms);
    caud_signer_free(r.signer);
    free(r.seqs);
    free(r.ts);
    free(r.hashes);
    free(r.events);

    return rc;
}
