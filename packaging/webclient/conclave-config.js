/*
 * Conclave web client: branding and connection settings.
 *
 * This is the one file an administrator edits (docs/webclient.md).  It is
 * plain JavaScript that sets window.conclaveConfig; conclave.js reads it
 * and starts converse.js.  Keep every URL on this server: the page's
 * Content-Security-Policy (index.html) refuses anything from elsewhere,
 * and nothing is ever fetched from the internet.
 */
window.conclaveConfig = {

    /* branding */
    productName: "Conclave",
    tagline: "Company chat",
    logoUrl: "logo.svg",            /* relative to the page, or "/..." */
    colors: {                       /* any CSS colour; "" keeps converse's */
        primary: "#1d5c87",         /* buttons, links, the active chat */
        controlbox: "#1d5c87",      /* the contacts pane */
        chat: "#2d7a57",            /* one-to-one chats */
        muc: "#a85a1c"              /* rooms */
    },
    links: [                        /* shown above the sign-in form */
        /* { text: "Help", url: "https://intranet.example.com/chat" } */
    ],

    /* connection */
    domain: "example.com",          /* the XMPP domain: conclave_domain */
    mucDomain: "",                  /* "" means conference.<domain> */
    websocketPath: "/xmpp-websocket",   /* on this page's origin */
    boshPath: "/http-bind",         /* fallback when WebSocket fails */
    discover: true,                 /* ask /.well-known/host-meta.json first */

    /* more converse.js settings, passed to converse.initialize() as is */
    converse: {
    }
};
