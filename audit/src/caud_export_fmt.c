
/*
 * The export formats (docs/compliance.md "Formats", COMPLIANCE.md 1.1):
 * Actiance XML through libxml2's xmlTextWriter, with Mattermost's
 * element order; CSV with Mattermost's 20 columns, adapted; Global
 * Relay style EML through GMime, one file per conversation batch; and
 * JSONL, which is records.jsonl alone (caud_export.c writes it for
 * every format).  Each batch's conversations arrive from caud_export.c
 * with their records in (time, id) order.
 */


#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <gmime/gmime.h>
#include <mysql.h>

#include "caud_export_int.h"


static const char  *caud_csv_columns[] = {
    "Post Creation Time", "Post Update Time", "Post Update Type",
    "Team Id", "Team Name", "Team Display Name", "Channel Id",
    "Channel Name", "Channel Display Name", "Channel Type", "User Id",
    "User Email", "Username", "Post Id", "Edited By Post Id",
    "Replied to Post Id", "Post Message", "Post Type", "User Type",
    "Previews Post Id"
};

#define CAUD_CSV_NCOLS  20


/* a participant and when, for ParticipantEntered/Left */
typedef struct {
    const char  *user;
    int64_t      ts;
} caud_xpart_t;


static int
caud_xpath(caud_export_t *x, char *buf, size_t size, const char *name)
{
    if ((size_t) snprintf(buf, size, "%s/%s", x->stage, name) >= size) {
        caud_xerr(x, "path too long: %s", name);
        return -1;
    }

    return 0;
}


static const char *
caud_xupdate_name(const caud_xrec_t *r)
{
    return r->update == CAUD_X_EDIT ? "EditedNewMsg"
           : r->update == CAUD_X_RETRACT ? "Deleted" : NULL;
}


/* the text of a retracted message, when the batch has it */
static const char *
caud_xoriginal(const caud_xconv_t *c, const caud_xrec_t *r)
{
    guint               i;
    const caud_xrec_t  *o;

    for (i = 0; r->ref && i < c->recs->len; i++) {
        o = c->recs->pdata[i];
        if (o != r && o->stanza_id && o->update != CAUD_X_RETRACT
            && strcmp(o->stanza_id, r->ref) == 0
            && strcmp(o->user, r->user) == 0)
        {
            return o->body;
        }
    }

    return NULL;
}


/*
 * Room membership over time from the MUC's muc_create / muc_join /
 * muc_leave records (docs/audit.md "Group chat records"): the members before
 * `before`, by one query on the (peer, ts_utc_us) index.
 */
int
caud_xroom_load(caud_export_t *x, const char *room, int64_t before,
    GHashTable *members)
{
    char         esc[1024], node[200], sql[2600];
    size_t       n;
    MYSQL_RES   *res;
    MYSQL_ROW    row;

    n = strlen(room);
    if (n >= 255) {
        return 0;
    }

    /* the main connection is streaming the window: a second one, for
     * membership before the batch (committed long before the export's
     * snapshot, so outside it does not matter) */
    if (x->m2 == NULL) {
        x->m2 = caud_db_connect(x->db, x->err, x->errlen);
        if (x->m2 == NULL) {
            return -1;
        }
    }

    mysql_real_escape_string(x->m2, esc, room, n);
    mysql_real_escape_string(x->m2, node, x->o->node, strlen(x->o->node));
    snprintf(sql, sizeof(sql), "SELECT actor_user, event FROM audit_record "
             "WHERE peer = '%s' AND node = '%s' AND event IN ('muc_create', "
             "'muc_join', 'muc_leave') AND ts_utc_us < %" PRId64 " AND "
             "actor_user IS "
             "NOT NULL ORDER BY ts_utc_us, writer_id, seq", esc, node,
             before);

    if (mysql_real_query(x->m2, sql, strlen(sql)) != 0
        || (res = mysql_store_result(x->m2)) == NULL)
    {
        caud_xerr(x, "mariadb: %s", mysql_error(x->m2));
        return -1;
    }

    while ((row = mysql_fetch_row(res)) != NULL) {
        if (strcmp(row[1], "muc_leave") != 0) {
            g_hash_table_replace(members, g_strdup(row[0]), NULL);
        } else {
            g_hash_table_remove(members, row[0]);
        }
    }

    mysql_free_result(res);

    return 0;
}


static gint
caud_xstrcmp(gconstpointer a, gconstpointer b)
{
    return strcmp(*(char *const *) a, *(char *const *) b);
}


/* the members, sorted, so an export is the same every time */
static GPtrArray *
caud_xkeys(GHashTable *members)
{
    GList      *l, *k;
    GPtrArray  *a;

    a = g_ptr_array_new();
    l = g_hash_table_get_keys(members);
    for (k = l; k; k = k->next) {
        g_ptr_array_add(a, k->data);
    }
    g_list_free(l);
    g_ptr_array_sort(a, caud_xstrcmp);

    return a;
}


/*
 * Who entered and left a conversation batch (COMPLIANCE.md 1.1): every
 * member present at its start enters at its start, a join inside it
 * enters then; a leave inside it leaves then, and whoever is still
 * present leaves at its end.  A 1:1 conversation has its two people.
 * Updates the room's membership for the next batch.
 */
static int
caud_xmembers(caud_export_t *x, caud_xconv_t *c, GArray *in, GArray *out)
{
    guint          i;
    GPtrArray     *keys;
    GHashTable    *members;
    caud_xrec_t   *r;
    caud_xpart_t   p;

    if (!c->room) {
        p.user = c->a;
        p.ts = c->start;
        g_array_append_val(in, p);
        if (strcmp(c->a, c->b) != 0) {
            p.user = c->b;
            g_array_append_val(in, p);
        }
        for (i = 0; i < in->len; i++) {
            p = g_array_index(in, caud_xpart_t, i);
            p.ts = c->end;
            g_array_append_val(out, p);
        }
        return 0;
    }

    members = g_hash_table_lookup(x->rooms, c->a);
    if (members == NULL) {
        members = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                        NULL);
        g_hash_table_insert(x->rooms, g_strdup(c->a), members);
        if (caud_xroom_load(x, c->a, c->start, members) != 0) {
            return -1;
        }
    }

    keys = caud_xkeys(members);
    for (i = 0; i < keys->len; i++) {
        p.user = g_intern_string(keys->pdata[i]);
        p.ts = c->start;
        g_array_append_val(in, p);
    }
    c->present = keys->len;
    g_ptr_array_free(keys, TRUE);

    for (i = 0; i < c->recs->len; i++) {
        r = c->recs->pdata[i];
        p.user = g_intern_string(r->user);
        p.ts = r->ts;

        if (r->kind == CAUD_X_JOIN) {
            g_array_append_val(in, p);
            g_hash_table_replace(members, g_strdup(r->user), NULL);

        } else if (r->kind == CAUD_X_LEAVE) {
            g_array_append_val(out, p);
            g_hash_table_remove(members, r->user);
        }
    }

    keys = caud_xkeys(members);
    for (i = 0; i < keys->len; i++) {
        p.user = g_intern_string(keys->pdata[i]);
        p.ts = c->end;
        g_array_append_val(out, p);
    }
    g_ptr_array_free(keys, TRUE);

    return 0;
}


/* ------------------------------------------------------------------ */
/* Actiance XML */

/* XML 1.0 (2.2) has no place for most C0 controls: U+FFFD instead */
static const char *
caud_xml_text(const char *s, size_t n, GString *tmp)
{
    size_t  i;

    for (i = 0; i < n; i++) {
        if ((unsigned char) s[i] < 0x20 && s[i] != '\t' && s[i] != '\n'
            && s[i] != '\r')
        {
            break;
        }
    }

    if (i == n) {
        return s;
    }

    g_string_truncate(tmp, 0);
    for (i = 0; i < n; i++) {
        if ((unsigned char) s[i] < 0x20 && s[i] != '\t' && s[i] != '\n'
            && s[i] != '\r')
        {
            g_string_append(tmp, "\xEF\xBF\xBD");
        } else {
            g_string_append_c(tmp, s[i]);
        }
    }

    return tmp->str;
}


#define W(call)  if ((call) < 0) goto fail

static int
caud_xml_part(caud_export_t *x, const char *el, const caud_xpart_t *p)
{
    xmlTextWriterPtr  w = x->xml;

    W(xmlTextWriterStartElement(w, BAD_CAST el));
    W(xmlTextWriterWriteElement(w, BAD_CAST "LoginName", BAD_CAST p->user));
    W(xmlTextWriterWriteElement(w, BAD_CAST "UserType", BAD_CAST "user"));
    W(xmlTextWriterWriteFormatElement(w, BAD_CAST "DateTimeUTC",
                                      "%" PRId64, caud_xtime(x, p->ts)));
    W(xmlTextWriterWriteElement(w, BAD_CAST "CorporateEmailID",
                                BAD_CAST p->user));
    W(xmlTextWriterEndElement(w));

    return 0;

fail:

    return -1;
}


static int
caud_xml_message(caud_export_t *x, caud_xconv_t *c, caud_xrec_t *r,
    GString *tmp, GString *tmp2)
{
    const char        *upd, *orig, *text;
    xmlTextWriterPtr   w = x->xml;

    upd = caud_xupdate_name(r);
    text = caud_xml_text(r->body, r->body_len, tmp);

    if (r->update == CAUD_X_RETRACT) {
        orig = caud_xoriginal(c, r);
        g_string_assign(tmp2, "delete");
        if (orig) {
            g_string_append_c(tmp2, ' ');
            g_string_append(tmp2, caud_xml_text(orig, strlen(orig), tmp));
        }
        text = tmp2->str;
    }

    W(xmlTextWriterStartElement(w, BAD_CAST "Message"));
    W(xmlTextWriterWriteElement(w, BAD_CAST "MessageId", BAD_CAST r->id));
    W(xmlTextWriterWriteElement(w, BAD_CAST "LoginName", BAD_CAST r->user));
    W(xmlTextWriterWriteElement(w, BAD_CAST "UserType", BAD_CAST "user"));
    W(xmlTextWriterWriteFormatElement(w, BAD_CAST "DateTimeUTC",
                                      "%" PRId64, caud_xtime(x, r->ts)));
    if (upd) {
        W(xmlTextWriterWriteElement(w, BAD_CAST "UpdatedType",
                                    BAD_CAST upd));
        W(xmlTextWriterWriteFormatElement(w, BAD_CAST "UpdatedDateTimeUTC",
                                          "%" PRId64,
                                          caud_xtime(x, r->ts)));
    }
    W(xmlTextWriterWriteElement(w, BAD_CAST "Content", BAD_CAST text));
    W(xmlTextWriterEndElement(w));

    return 0;

fail:

    return -1;
}


static int
caud_xml_conv(caud_export_t *x, caud_xconv_t *c, GArray *in, GArray *out,
    GString *tmp, GString *tmp2)
{
    guint              i;
    char               room[1024];
    caud_xrec_t       *r;
    xmlTextWriterPtr   w = x->xml;

    snprintf(room, sizeof(room), "%s - %s - %s",
             c->room ? "private" : "direct", c->name, c->id);

    W(xmlTextWriterStartElement(w, BAD_CAST "Conversation"));
    W(xmlTextWriterWriteAttribute(w, BAD_CAST "Perspective",
                                  BAD_CAST c->name));
    W(xmlTextWriterWriteElement(w, BAD_CAST "RoomID", BAD_CAST room));
    W(xmlTextWriterWriteFormatElement(w, BAD_CAST "StartTimeUTC",
                                      "%" PRId64, caud_xtime(x, c->start)));

    for (i = 0; i < in->len; i++) {
        W(caud_xml_part(x, "ParticipantEntered",
                        &g_array_index(in, caud_xpart_t, i)));
    }

    for (i = 0; i < c->recs->len; i++) {
        r = c->recs->pdata[i];
        if (r->kind == CAUD_X_MESSAGE) {
            W(caud_xml_message(x, c, r, tmp, tmp2));
        }
    }

    for (i = 0; i < out->len; i++) {
        W(caud_xml_part(x, "ParticipantLeft",
                        &g_array_index(out, caud_xpart_t, i)));
    }

    W(xmlTextWriterWriteFormatElement(w, BAD_CAST "EndTimeUTC",
                                      "%" PRId64, caud_xtime(x, c->end)));
    W(xmlTextWriterEndElement(w));

    return 0;

fail:

    caud_xerr(x, "actiance_export.xml: write failed");
    return -1;
}


/* ------------------------------------------------------------------ */
/* CSV (RFC 4180) */

/*
 * A field of RFC 4180.  A value a spreadsheet would take for a formula
 * (=, +, -, @, or a tab or CR first) gets a leading "'" and quotes
 * (OWASP "CSV injection"): the CSV is a view for people, records.jsonl
 * in the same zip keeps the exact bytes.
 */
static void
caud_csv_field(FILE *fp, const char *s, int last)
{
    int  formula;

    formula = s && (s[0] == '=' || s[0] == '+' || s[0] == '-'
                    || s[0] == '@' || s[0] == '\t' || s[0] == '\r');

    if (s && (formula || strpbrk(s, "\",\r\n") != NULL)) {
        fputc('"', fp);
        if (formula) {
            fputc('\'', fp);
        }
        for (; *s; s++) {
            if (*s == '"') {
                fputc('"', fp);
            }
            fputc(*s, fp);
        }
        fputc('"', fp);

    } else if (s) {
        fputs(s, fp);
    }

    fputs(last ? "\r\n" : ",", fp);
}


static void
caud_csv_row(caud_export_t *x, caud_xconv_t *c, const char *user,
    int64_t ts, const char *upd, const char *post_id, const char *ref,
    const char *text, const char *type)
{
    int          i;
    char         t[32], *local, *at;
    const char  *v[CAUD_CSV_NCOLS];

    snprintf(t, sizeof(t), "%" PRId64, caud_xtime(x, ts));
    local = g_strdup(user);
    at = strchr(local, '@');
    if (at) {
        *at = '\0';
    }

    v[0] = t;
    v[1] = t;
    v[2] = upd ? upd : "";
    v[3] = c->domain;
    v[4] = c->domain;
    v[5] = c->domain;
    v[6] = c->id;
    v[7] = c->name;
    v[8] = c->name;
    v[9] = c->room ? "private" : "direct";
    v[10] = user;
    v[11] = user;
    v[12] = local;
    v[13] = post_id;
    v[14] = ref ? ref : "";
    v[15] = "";
    v[16] = text;
    v[17] = type;
    v[18] = "user";
    v[19] = "";

    for (i = 0; i < CAUD_CSV_NCOLS; i++) {
        caud_csv_field(x->csv, v[i], i == CAUD_CSV_NCOLS - 1);
    }

    g_free(local);
}


static int
caud_csv_conv(caud_export_t *x, caud_xconv_t *c, GArray *in)
{
    guint          i;
    char          *text;
    const char    *orig;
    caud_xrec_t   *r;
    caud_xpart_t  *p;

    for (i = 0; c->room && i < c->present; i++) {
        p = &g_array_index(in, caud_xpart_t, i);
        text = g_strdup_printf("User %s (%s) was already in the room",
                               p->user, p->user);
        caud_csv_row(x, c, p->user, p->ts, NULL, "", NULL, text,
                     "previously-joined");
        g_free(text);
    }

    for (i = 0; i < c->recs->len; i++) {
        r = c->recs->pdata[i];

        if (r->kind == CAUD_X_MESSAGE) {
            text = NULL;
            if (r->update == CAUD_X_RETRACT) {
                orig = caud_xoriginal(c, r);
                text = g_strconcat("delete", orig ? " " : "", orig, NULL);
            }
            caud_csv_row(x, c, r->user, r->ts, caud_xupdate_name(r), r->id,
                         r->ref, text ? text : r->body, "message");
            g_free(text);
            continue;
        }

        text = g_strdup_printf("User %s (%s) %s the room", r->user, r->user,
                               r->kind == CAUD_X_JOIN ? "joined" : "left");
        caud_csv_row(x, c, r->user, r->ts, NULL, r->id, NULL, text,
                     r->kind == CAUD_X_JOIN ? "enter" : "leave");
        g_free(text);
    }

    if (ferror(x->csv)) {
        caud_xerr(x, "posts.csv: %s", strerror(errno));
        return -1;
    }

    return 0;
}


/* metadata.json: per conversation the messages and the time range */
static void
caud_csv_meta(caud_export_t *x, json_t *meta, caud_xconv_t *c)
{
    guint    i, n;
    json_t  *e;

    for (i = 0, n = 0; i < c->recs->len; i++) {
        n += ((caud_xrec_t *) c->recs->pdata[i])->kind == CAUD_X_MESSAGE;
    }

    e = json_object_get(meta, c->id);
    if (e == NULL) {
        e = json_pack("{s:s, s:s, s:I, s:I, s:I}", "name", c->name,
                      "type", c->room ? "private" : "direct",
                      "message_count", (json_int_t) 0,
                      "start_time", (json_int_t) caud_xtime(x, c->start),
                      "end_time", (json_int_t) 0);
        if (e == NULL || json_object_set_new(meta, c->id, e) != 0) {
            return;
        }
    }

    json_object_set_new(e, "message_count", json_integer(
        json_integer_value(json_object_get(e, "message_count")) + n));
    json_object_set_new(e, "end_time", json_integer(caud_xtime(x, c->end)));
}


/* ------------------------------------------------------------------ */
/* EML, Global Relay style (COMPLIANCE.md 1.1) */

static void
caud_eml_time(int64_t us, char *buf, size_t size)
{
    time_t     t;
    struct tm  tm;
    size_t     n;

    t = us / 1000000;
    gmtime_r(&t, &tm);
    n = strftime(buf, size, "%Y-%m-%d %H:%M:%S", &tm);
    snprintf(buf + n, size - n, ".%03d UTC", (int) (us / 1000 % 1000));
}


/* a file name from a conversation name: no '/', no controls */
static char *
caud_eml_safe(const char *name)
{
    char  *s, *p;

    s = g_strdup(name);
    for (p = s; *p; p++) {
        if ((unsigned char) *p < 0x20 || strchr("/\\:*?\"<>|", *p)) {
            *p = '_';
        }
    }

    if (s[0] == '.') {
        s[0] = '_';
    }

    return s;
}


static void
caud_eml_line(caud_xconv_t *c, caud_xrec_t *r, GString *text,
    GString *html)
{
    char        when[64], *esc;
    const char *what, *orig;
    GString    *line;

    caud_eml_time(r->ts, when, sizeof(when));
    line = g_string_new(NULL);

    if (r->kind == CAUD_X_JOIN || r->kind == CAUD_X_LEAVE) {
        what = r->kind == CAUD_X_JOIN ? "joined the room" : "left the room";
        g_string_printf(line, "%s %s %s", when, r->user, what);

    } else if (r->update == CAUD_X_RETRACT) {
        orig = caud_xoriginal(c, r);
        g_string_printf(line, "%s %s deleted message %s%s%s", when, r->user,
                        r->ref ? r->ref : "", orig ? ": " : "",
                        orig ? orig : "");

    } else if (r->update == CAUD_X_EDIT) {
        g_string_printf(line, "%s %s (edited message %s): %s", when,
                        r->user, r->ref ? r->ref : "", r->body);

    } else {
        g_string_printf(line, "%s %s: %s", when, r->user, r->body);
    }

    g_string_append(text, line->str);
    g_string_append(text, "\n");

    /* message bodies are text, never markup */
    esc = g_markup_escape_text(line->str, line->len);
    g_string_append_printf(html, "<li>%s</li>\n", esc);
    g_free(esc);
    g_string_free(line, TRUE);
}


static GMimeObject *
caud_eml_part(const char *subtype, const char *s)
{
    GMimeTextPart  *p;

    p = g_mime_text_part_new_with_subtype(subtype);
    g_mime_text_part_set_text(p, s);
    g_mime_part_set_content_encoding(GMIME_PART(p),
                                     GMIME_CONTENT_ENCODING_QUOTEDPRINTABLE);

    return GMIME_OBJECT(p);
}


static int
caud_eml_write(caud_export_t *x, caud_xconv_t *c, GArray *in,
    GString *text, GString *body, GHashTable *sent)
{
    int               rc;
    char              path[4400], name[4200], *safe, *esc, *mid;
    guint             i, *n;
    GString          *html;
    GDateTime        *dt;
    FILE             *fp;
    GMimeStream      *fs;
    GMimeMessage     *msg;
    GMimeMultipart   *mp;
    GMimeObject      *part;
    GHashTableIter    it;
    gpointer          k, v;
    const char       *user;

    n = g_hash_table_lookup(x->eml_n, c->id);
    if (n == NULL) {
        n = g_new0(guint, 1);
        g_hash_table_insert(x->eml_n, g_strdup(c->id), n);
    }
    (*n)++;

    safe = caud_eml_safe(c->name);
    snprintf(name, sizeof(name), "eml/%s - (%s) - %u.eml", safe, c->id, *n);
    g_free(safe);

    msg = g_mime_message_new(TRUE);

    for (i = 0; i < in->len; i++) {
        user = g_array_index(in, caud_xpart_t, i).user;
        g_mime_message_add_mailbox(msg, i == 0 ? GMIME_ADDRESS_TYPE_FROM
                                               : GMIME_ADDRESS_TYPE_TO,
                                   NULL, user);
        if (i == 0) {
            g_mime_message_add_mailbox(msg, GMIME_ADDRESS_TYPE_TO, NULL,
                                       user);
        }
    }

    esc = g_strconcat("Conclave Compliance Export: ", c->name, NULL);
    g_mime_message_set_subject(msg, esc, "utf-8");
    g_free(esc);

    dt = g_date_time_new_from_unix_utc(c->end / 1000000);
    g_mime_message_set_date(msg, dt);
    g_date_time_unref(dt);

    mid = g_strdup_printf("%s.%u.%" PRId64 "@%s", c->id, *n, c->end,
                          c->domain);
    g_mime_message_set_message_id(msg, mid);
    g_free(mid);

    g_mime_object_set_header(GMIME_OBJECT(msg), "Auto-Submitted",
                             "auto-generated", NULL);
    g_mime_object_set_header(GMIME_OBJECT(msg), "Precedence", "bulk", NULL);
    g_mime_object_set_header(GMIME_OBJECT(msg), "X-GlobalRelay-MsgType",
                             "Conclave", NULL);
    g_mime_object_set_header(GMIME_OBJECT(msg), "X-Conclave-ChannelName",
                             c->name, "utf-8");
    g_mime_object_set_header(GMIME_OBJECT(msg), "X-Conclave-ChannelID",
                             c->id, "utf-8");
    g_mime_object_set_header(GMIME_OBJECT(msg), "X-Conclave-ChannelType",
                             c->room ? "private" : "direct", NULL);

    html = g_string_new("<html><body>\n<h3>Participants</h3>\n<table>\n"
                        "<tr><th>Participant</th><th>Messages sent</th>"
                        "</tr>\n");
    g_hash_table_iter_init(&it, sent);
    while (g_hash_table_iter_next(&it, &k, &v)) {
        esc = g_markup_escape_text(k, -1);
        g_string_append_printf(html, "<tr><td>%s</td><td>%u</td></tr>\n",
                               esc, GPOINTER_TO_UINT(v));
        g_free(esc);
    }
    g_string_append(html, "</table>\n<h3>Messages</h3>\n<ul>\n");
    g_string_append(html, body->str);
    g_string_append(html, "</ul>\n</body></html>\n");

    mp = g_mime_multipart_new_with_subtype("alternative");
    part = caud_eml_part("plain", text->str);
    g_mime_multipart_add(mp, part);
    g_object_unref(part);
    part = caud_eml_part("html", html->str);
    g_mime_multipart_add(mp, part);
    g_object_unref(part);
    g_mime_message_set_mime_part(msg, GMIME_OBJECT(mp));
    g_object_unref(mp);
    g_string_free(html, TRUE);

    rc = -1;
    if (caud_xpath(x, path, sizeof(path), name) == 0) {
        /* a stdio stream: GMimeStreamFs's flush is an fsync(), one per
         * file, and the zip made from these files is what must last */
        fp = fopen(path, "w");
        fs = fp ? g_mime_stream_file_new(fp) : NULL;
        if (fs != NULL) {
            if (g_mime_object_write_to_stream(GMIME_OBJECT(msg), NULL, fs)
                >= 0 && g_mime_stream_flush(fs) == 0)
            {
                rc = 0;
            }
            g_object_unref(fs);
        }
        if (rc != 0) {
            caud_xerr(x, "%s: %s", path, strerror(errno));
        }
    }

    g_object_unref(msg);

    return rc;
}


/* one .eml per conversation batch, another when one passes the cap */
static int
caud_eml_conv(caud_export_t *x, caud_xconv_t *c, GArray *in)
{
    int           rc;
    guint         i;
    GString      *text, *html;
    GHashTable   *sent;
    caud_xrec_t  *r;

    text = g_string_new(NULL);
    html = g_string_new(NULL);
    sent = g_hash_table_new(g_str_hash, g_str_equal);
    rc = 0;

    for (i = 0; i < in->len; i++) {
        g_hash_table_insert(sent, (gpointer) g_array_index(in, caud_xpart_t,
                                                           i).user,
                            GUINT_TO_POINTER(0));
    }

    for (i = 0; i < c->recs->len && rc == 0; i++) {
        r = c->recs->pdata[i];
        caud_eml_line(c, r, text, html);

        if (r->kind == CAUD_X_MESSAGE) {
            g_hash_table_insert(sent, r->user, GUINT_TO_POINTER(
                GPOINTER_TO_UINT(g_hash_table_lookup(sent, r->user)) + 1));
        }

        if (text->len + html->len > CAUD_EML_MAX / 3) {
            rc = caud_eml_write(x, c, in, text, html, sent);
            g_string_truncate(text, 0);
            g_string_truncate(html, 0);
        }
    }

    if (rc == 0 && text->len) {
        rc = caud_eml_write(x, c, in, text, html, sent);
    }

    g_string_free(text, TRUE);
    g_string_free(html, TRUE);
    g_hash_table_destroy(sent);

    return rc;
}


/* ------------------------------------------------------------------ */

/* GMime's set-up counts calls without a lock: once per process, from
 * whichever export thread gets there first */
static gpointer
caud_xmime_once(gpointer data)
{
    (void) data;
    g_mime_init();
    return NULL;
}


static void
caud_xmime_init(void)
{
    static GOnce  once = G_ONCE_INIT;

    g_once(&once, caud_xmime_once, NULL);
}


int
caud_xfmt_open(caud_export_t *x)
{
    char  path[4200];

    x->jsonl = caud_xout_open(x, "records.jsonl");
    if (x->jsonl == NULL) {
        return -1;
    }

    switch (x->o->format) {

    case CAUD_FMT_ACTIANCE:
        x->xmlfp = caud_xout_open(x, "actiance_export.xml");
        if (x->xmlfp == NULL) {
            return -1;
        }
        /* the output buffer flushes into xmlfp, never closes it */
        x->xml = xmlNewTextWriter(xmlOutputBufferCreateFile(x->xmlfp,
                                                            NULL));
        if (x->xml == NULL
            || xmlTextWriterSetIndent(x->xml, 1) < 0
            || xmlTextWriterStartDocument(x->xml, NULL, "UTF-8", NULL) < 0
            || xmlTextWriterStartElement(x->xml, BAD_CAST "FileDump") < 0
            || xmlTextWriterWriteAttribute(x->xml, BAD_CAST "xmlns:xsi",
                   BAD_CAST "http://www.w3.org/2001/XMLSchema-instance") < 0)
        {
            caud_xerr(x, "%s: cannot write", path);
            return -1;
        }
        break;

    case CAUD_FMT_CSV:
        x->csv = caud_xout_open(x, "posts.csv");
        if (x->csv == NULL) {
            return -1;
        }
        for (int i = 0; i < CAUD_CSV_NCOLS; i++) {
            caud_csv_field(x->csv, caud_csv_columns[i],
                           i == CAUD_CSV_NCOLS - 1);
        }
        x->meta = json_object();
        break;

    case CAUD_FMT_EML:
        if (caud_xpath(x, path, sizeof(path), "eml") != 0
            || mkdir(path, 0700) != 0)
        {
            caud_xerr(x, "%s: %s", path, strerror(errno));
            return -1;
        }
        caud_xmime_init();
        break;

    case CAUD_FMT_JSONL:
        break;
    }

    return 0;
}


int
caud_xfmt_batch(caud_export_t *x)
{
    int            rc;
    guint          i;
    GArray        *in, *out;
    GString       *tmp, *tmp2;
    caud_xconv_t  *c;

    if (x->o->format == CAUD_FMT_JSONL) {
        return 0;
    }

    in = g_array_new(FALSE, FALSE, sizeof(caud_xpart_t));
    out = g_array_new(FALSE, FALSE, sizeof(caud_xpart_t));
    tmp = g_string_new(NULL);
    tmp2 = g_string_new(NULL);
    rc = 0;

    for (i = 0; i < x->order->len && rc == 0; i++) {
        c = x->order->pdata[i];
        g_array_set_size(in, 0);
        g_array_set_size(out, 0);

        if (caud_xmembers(x, c, in, out) != 0) {
            rc = -1;
            break;
        }

        x->res->conversations++;

        switch (x->o->format) {
        case CAUD_FMT_ACTIANCE:
            rc = caud_xml_conv(x, c, in, out, tmp, tmp2);
            break;
        case CAUD_FMT_CSV:
            rc = caud_csv_conv(x, c, in);
            caud_csv_meta(x, x->meta, c);
            break;
        default:
            rc = caud_eml_conv(x, c, in);
            break;
        }
    }

    g_array_free(in, TRUE);
    g_array_free(out, TRUE);
    g_string_free(tmp, TRUE);
    g_string_free(tmp2, TRUE);

    return rc;
}


int
caud_xfmt_close(caud_export_t *x)
{
    int    rc;
    char   path[4200];

    rc = 0;

    if (x->xml) {
        if (xmlTextWriterEndDocument(x->xml) < 0) {
            caud_xerr(x, "actiance_export.xml: write failed");
            rc = -1;
        }
        xmlFreeTextWriter(x->xml);
        x->xml = NULL;
    }

    if (x->xmlfp) {
        if (fclose(x->xmlfp) != 0 && rc == 0) {
            caud_xerr(x, "actiance_export.xml: %s", strerror(errno));
            rc = -1;
        }
        x->xmlfp = NULL;
    }

    if (x->csv) {
        if (fclose(x->csv) != 0 && rc == 0) {
            caud_xerr(x, "posts.csv: %s", strerror(errno));
            rc = -1;
        }
        x->csv = NULL;
    }

    if (x->meta) {
        if (caud_xpath(x, path, sizeof(path), "metadata.json") == 0
            && json_dump_file(x->meta, path, JSON_INDENT(2)
                              | JSON_SORT_KEYS) != 0 && rc == 0)
        {
            caud_xerr(x, "%s: cannot write", path);
            rc = -1;
        }
        json_decref(x->meta);
        x->meta = NULL;
    }

    if (x->jsonl) {
        if (fclose(x->jsonl) != 0 && rc == 0) {
            caud_xerr(x, "records.jsonl: %s", strerror(errno));
            rc = -1;
        }
        x->jsonl = NULL;
    }

    return rc;
}
