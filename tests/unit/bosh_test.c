
/*
 * Table-driven tests of the BOSH request parser (XEP-0124 section 7,
 * XEP-0206): accepted and refused bodies, the attributes, each child
 * serialized on its own with the namespaces it uses, and the sid.
 */


#include <stdio.h>
#include <string.h>

#include "ngx_xmpp_proto.h"
#include "unit.h"


#define NS  "xmlns='http://jabber.org/protocol/httpbind'"
#define XB  "xmlns:xmpp='urn:xmpp:xbosh'"


static const struct {
    const char  *xml;
    int          ok;
} bodies[] = {
    { "<body rid='1' " NS "/>", 0 },
    { "<?xml version='1.0'?><body rid='9007199254740991' " NS "/>", 0 },
    { "<b:body rid='1' xmlns:b='http://jabber.org/protocol/httpbind'/>", 0 },
    { "", -1 },
    { "<body rid='1' " NS, -1 },
    { "<body rid='1' " NS "/><body/>", -1 },
    { "<html rid='1' " NS "/>", -1 },
    { "<body rid='1' xmlns='jabber:client'/>", -1 },
    { "<body rid='1'/>", -1 },
    { "<body " NS "/>", -1 },
    { "<body rid='' " NS "/>", -1 },
    { "<body rid='-1' " NS "/>", -1 },
    { "<body rid='1x' " NS "/>", -1 },
    { "<body rid='12345678901234567' " NS "/>", -1 },
    { "<body rid='1' wait='x' " NS "/>", -1 },
    { "<body rid='1' hold='-1' " NS "/>", -1 },
    { "<body rid='1' pause='0' " NS "/>", -1 },
    { "<!DOCTYPE body [<!ENTITY a 'b'>]><body rid='1' " NS ">&a;</body>",
      -1 },
    { "<!DOCTYPE body SYSTEM 'file:///etc/passwd'><body rid='1' " NS "/>",
      -1 },
    { "<body rid='1' sid='"
      "0123456789012345678901234567890123456789012345678901234567890123"
      "0123456789012345678901234567890123456789012345678901234567890123"
      "' " NS "/>", -1 },
};


static void
test_bodies(void)
{
    size_t                i;
    int                   rc;
    ngx_xmpp_bosh_body_t  b;

    for (i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        rc = ngx_xmpp_bosh_body_parse(&b, (const unsigned char *)
                                      bodies[i].xml, strlen(bodies[i].xml));
        checkf(rc == bodies[i].ok, "body %zu: %d (%s)", i, rc,
              b.error ? b.error : "-");
        checkf(rc == 0 || b.error != NULL, "body %zu: no reason", i);
        ngx_xmpp_bosh_body_free(&b);
    }
}


static void
test_attributes(void)
{
    const char            *xml;
    ngx_xmpp_bosh_body_t   b;

    xml = "<body rid='42' sid='abc' wait='7200' hold='3' pause='30' "
          "type='terminate' xmpp:restart='true' " NS " " XB "/>";

    checkf(ngx_xmpp_bosh_body_parse(&b, (const unsigned char *) xml,
                                   strlen(xml)) == 0, "attributes");
    checkf(b.rid == 42, "rid %llu", (unsigned long long) b.rid);
    checkf(b.sid_len == 3 && memcmp(b.sid, "abc", 3) == 0, "sid");
    checkf(b.wait == 3600, "wait capped: %u", b.wait);
    checkf(b.hold == 1, "hold capped: %d", b.hold);
    checkf(b.pause == 30, "pause %u", b.pause);
    checkf(b.terminate && b.restart, "type and restart");
    checkf(ngx_xmpp_bosh_body_next(&b) == 0, "no children");
    ngx_xmpp_bosh_body_free(&b);

    /* restart only in the xbosh namespace */
    xml = "<body rid='1' restart='true' " NS "/>";
    checkf(ngx_xmpp_bosh_body_parse(&b, (const unsigned char *) xml,
                                   strlen(xml)) == 0, "restart");
    checkf(!b.restart && !b.terminate && b.hold == -1 && b.wait == 0
          && b.sid_len == 0 && !b.ver, "defaults");
    ngx_xmpp_bosh_body_free(&b);

    /* any "ver", even one we do not know, is not a legacy client */
    xml = "<body rid='1' ver='1.6' " NS "/>";
    checkf(ngx_xmpp_bosh_body_parse(&b, (const unsigned char *) xml,
                                   strlen(xml)) == 0 && b.ver, "ver");
    ngx_xmpp_bosh_body_free(&b);

    xml = "<body rid='1' ver='' " NS "/>";
    checkf(ngx_xmpp_bosh_body_parse(&b, (const unsigned char *) xml,
                                   strlen(xml)) == 0 && b.ver, "empty ver");
    ngx_xmpp_bosh_body_free(&b);
}


static void
test_children(void)
{
    const char            *xml;
    ngx_xmpp_bosh_body_t   b;

    xml = "<body rid='1' " NS " xmlns:j='jabber:client'> "
          "<message xmlns='jabber:client' to='a@b'><body>x &amp; y"
          "</body></message>text<!-- c -->"
          "<j:iq type='get' id='1'/>"
          "<presence/></body>";

    checkf(ngx_xmpp_bosh_body_parse(&b, (const unsigned char *) xml,
                                   strlen(xml)) == 0, "children");

    checkf(ngx_xmpp_bosh_body_next(&b) == 1, "first child");
    checkf(b.child_len == strlen("<message xmlns=\"jabber:client\" "
                                "to=\"a@b\"><body>x &amp; y</body>"
                                "</message>")
          && memcmp(b.child, "<message xmlns=\"jabber:client\" to=\"a@b\">"
                    "<body>x &amp; y</body></message>", b.child_len) == 0,
          "message: %.*s", (int) b.child_len, b.child);

    /* a prefix declared on <body/> is declared on the copy */
    checkf(ngx_xmpp_bosh_body_next(&b) == 1, "second child");
    checkf(strstr((const char *) b.child, "xmlns:j=\"jabber:client\"")
          != NULL, "iq: %.*s", (int) b.child_len, b.child);

    /* no xmlns of its own: in the httpbind namespace, and says so */
    checkf(ngx_xmpp_bosh_body_next(&b) == 1, "third child");
    checkf(strstr((const char *) b.child,
                 "xmlns=\"http://jabber.org/protocol/httpbind\"") != NULL,
          "presence: %.*s", (int) b.child_len, b.child);

    checkf(ngx_xmpp_bosh_body_next(&b) == 0, "end");
    checkf(ngx_xmpp_bosh_body_next(&b) == 0, "end again");
    ngx_xmpp_bosh_body_free(&b);
}


static void
test_sid(void)
{
    uint32_t     pid;
    uint64_t     id;
    const char  *key;
    const char  *sid;

    sid = "0000abcd000000000000002a0123456789abcdef0123456789abcdef";
    checkf(ngx_xmpp_bosh_sid_split(sid, strlen(sid), &pid, &id, &key) == 0
          && pid == 0xabcd && id == 42 && key == sid + 24, "sid");

    checkf(ngx_xmpp_bosh_sid_split(sid, strlen(sid) - 1, &pid, &id, &key)
          == -1, "short sid");

    sid = "0000abcd000000000000002a0123456789ABCDEF0123456789abcdef";
    checkf(ngx_xmpp_bosh_sid_split(sid, strlen(sid), &pid, &id, &key) == -1,
          "upper case");

    sid = "00000000000000000000002a0123456789abcdef0123456789abcdef";
    checkf(ngx_xmpp_bosh_sid_split(sid, strlen(sid), &pid, &id, &key) == -1,
          "pid 0");

    sid = "0000abcd00000000000000000123456789abcdef0123456789abcdef";
    checkf(ngx_xmpp_bosh_sid_split(sid, strlen(sid), &pid, &id, &key) == -1,
          "id 0");

    sid = "0000abcd000000000000002a0123456789abcdef0123456789abcdeg";
    checkf(ngx_xmpp_bosh_sid_split(sid, strlen(sid), &pid, &id, &key) == -1,
          "bad key");
}


int
main(void)
{
    test_bodies();
    test_attributes();
    test_children();
    test_sid();

    return unit_report();
}
