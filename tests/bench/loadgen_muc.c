
/*
 * loadgen: the muc-fanout scenario's room (XEP-0045): who creates it,
 * the instant room a locking server wants (10.1.2), the joins, and the
 * occupants' presence.  The messages themselves are the chat code's
 * (loadgen.c: lg_chat_send, lg_chat_receive).
 */

#include "loadgen.h"


static void lg_muc_join(lg_conn_t *c);


/* a session is online: the first creates the room, the others join */
void
lg_muc_online(lg_conn_t *c)
{
    if (lg.room_state == LG_ROOM_NONE) {
        lg.room_state = LG_ROOM_CREATING;
        lg.creator = c;
        lg_muc_join(c);

    } else if (lg.room_state == LG_ROOM_READY) {
        lg_muc_join(c);
    }

    /* LG_ROOM_CREATING: lg_muc_ready() sends the join */
}


static void
lg_muc_join(lg_conn_t *c)
{
    /* XEP-0045 7.2: join with no history (7.2.14) */
    if (lg_send(c, "<presence xmlns='jabber:client' to='%s/n%u'>"
                "<x xmlns='http://jabber.org/protocol/muc'>"
                "<history maxstanzas='0'/></x></presence>",
                lg.room, c->slot)
        == 0)
    {
        c->join_sent = 1;
    }
}


/* the room is open to everybody: the sessions online meanwhile join */
static void
lg_muc_ready(void)
{
    int         i;
    lg_conn_t  *c;

    lg.room_state = LG_ROOM_READY;

    for (i = 0; i < lg.nslots; i++) {
        c = &lg.conns[i];
        if (c->state == LG_ONLINE && !c->join_sent) {
            lg_muc_join(c);
        }
    }
}


/*
 * The creator's own presence says 201 (XEP-0045 10.1.1) when its join
 * created the room.  Some servers (ejabberd, Prosody) then keep it
 * locked, refusing everybody else with <item-not-found/>, until the
 * owner configures it: ask for an instant room (10.1.2), an empty
 * submitted form, which is also harmless where the room is open at
 * once (Conclave).  Others join once the form is accepted.
 */
static void
lg_muc_created(lg_conn_t *c, const unsigned char *m, size_t len)
{
    if (memmem(m, len, "code='201'", 10) != NULL
        || memmem(m, len, "code=\"201\"", 10) != NULL)
    {
        (void) lg_send(c, "<iq xmlns='jabber:client' type='set' to='%s'"
                       " id='lg-instant'><query xmlns='http://jabber.org/"
                       "protocol/muc#owner'><x xmlns='jabber:x:data'"
                       " type='submit'/></query></iq>", lg.room);
        return;
    }

    /* the room was there already (a persistent one): nothing to do */
    lg_muc_ready();
}


/* muc-fanout: the answer to the instant room request */
void
lg_muc_iq(lg_conn_t *c, const unsigned char *m, size_t len)
{
    char                  cond[64];
    size_t                n;
    const unsigned char  *v;

    n = lg_xml_attr(m, len, "id", &v);
    if (c != lg.creator || lg.room_state != LG_ROOM_CREATING
        || n != 10 || memcmp(v, "lg-instant", 10) != 0)
    {
        return;                 /* not ours to answer (no get or set) */
    }

    n = lg_xml_attr(m, len, "type", &v);
    if (n == 6 && memcmp(v, "result", 6) == 0) {
        lg_muc_ready();
        return;
    }

    lg_xml_condition(m, len, cond, sizeof(cond));
    lg_fail(c, "muc: instant room refused: %s", cond);
}


/* muc-fanout: the room's presence for this occupant is its join */
void
lg_muc_presence(lg_conn_t *c, const unsigned char *m, size_t len)
{
    char                  want[320];
    size_t                n, wn;
    const unsigned char  *v;

    lg.t_presence = lg_now();

    if (c->joined) {
        return;
    }

    n = lg_xml_attr(m, len, "type", &v);
    if (n == 5 && memcmp(v, "error", 5) == 0) {
        lg_fail(c, "muc: join refused");
        return;
    }

    wn = snprintf(want, sizeof(want), "%s/n%u", lg.room, c->slot);
    n = lg_xml_attr(m, len, "from", &v);

    if (n == wn && memcmp(v, want, n) == 0) {
        c->joined = 1;
        lg.joined++;

        if (c == lg.creator && lg.room_state == LG_ROOM_CREATING) {
            lg_muc_created(c, m, len);
        }
    }
}
