/*
 * Conclave web client: starts converse.js (served from ./converse/) with
 * the settings of conclave-config.js.
 *
 * - The WebSocket URL is found through XEP-0156 on this page's own origin
 *   (/.well-known/host-meta.json), falling back to websocketPath there.
 *   converse's own discovery is off: it would ask https://<domain>/,
 *   which is a host on the internet, not this appliance.
 * - BOSH (boshPath) is converse's fallback when the WebSocket fails.
 * - Settings that would make converse fetch from the internet (provider
 *   lists, remote media, room search on a public service) are off.
 * - Branding: product name, logo, colours and links replace converse's
 *   own (and its sponsors' logos, which would come from the internet).
 */
(function () {
    "use strict";

    var REL_WEBSOCKET = "urn:xmpp:alt-connections:websocket";
    var REL_XBOSH = "urn:xmpp:alt-connections:xbosh";

    var cfg = window.conclaveConfig || {};
    var here = new URL(document.baseURI);
    var secure = here.protocol === "https:";

    function absolute(path, ws) {
        var u = new URL(path, here.origin);

        if (ws) {
            u.protocol = secure ? "wss:" : "ws:";
        }

        return u.href;
    }

    /* a discovered URL is used only if the page may connect to it */
    function usable(href, schemes) {
        try {
            return schemes.indexOf(new URL(href).protocol) >= 0;
        } catch (e) {
            return false;
        }
    }

    function discover() {
        var url = new URL("/.well-known/host-meta.json", here.origin).href;

        return fetch(url, { headers: { Accept: "application/json" },
                            cache: "no-cache", credentials: "omit" })
            .then(function (r) { return r.ok ? r.json() : { links: [] }; })
            .catch(function () { return { links: [] }; })
            .then(function (doc) {
                var found = {};

                (doc.links || []).forEach(function (l) {
                    if (l.rel === REL_WEBSOCKET && !found.ws
                        && usable(l.href, secure ? ["wss:"] : ["ws:", "wss:"]))
                    {
                        found.ws = l.href;
                    }

                    if (l.rel === REL_XBOSH && !found.bosh
                        && usable(l.href, secure ? ["https:"]
                                                 : ["http:", "https:"]))
                    {
                        found.bosh = l.href;
                    }
                });

                return found;
            });
    }

    function brandingCss() {
        var c = cfg.colors || {};
        var vars = {
            "--primary-color": c.primary,
            "--primary-color-hover": c.primary,
            "--link-color": c.primary,
            "--controlbox-color": c.controlbox,
            "--controlbox-color-hover": c.controlbox,
            "--chat-color": c.chat,
            "--chat-color-hover": c.chat,
            "--muc-color": c.muc,
            "--muc-color-hover": c.muc
        };
        var decl = "";

        Object.keys(vars).forEach(function (k) {
            var v = vars[k];

            if (v && window.CSS && CSS.supports("color", v)) {
                decl += k + ":" + v + " !important;";
            }
        });

        if (!decl) {
            return;
        }

        /* the same specificity as converse's theme rules, and later */
        var style = document.createElement("style");
        style.textContent = ".conversejs[data-converse-theme],"
            + "converse-bg[data-converse-theme]{" + decl + "}";
        document.head.appendChild(style);
    }

    /* converse's brand elements, re-rendered with ours (lit escapes) */
    function brandingPlugin() {
        var name = cfg.productName || "Conclave";
        var tagline = cfg.tagline || "";
        var logo = cfg.logoUrl || "logo.svg";
        var links = (cfg.links || []).filter(function (l) {
            return l && l.text && /^(https?:|\/|#)/.test(l.url || "");
        });

        converse.plugins.add("conclave-branding", {
            initialize: function () {
                var api = this._converse.api;
                var html = converse.env.html;
                var reg = api.elements.registry;
                var version = this._converse.VERSION_NAME || "";

                function heading() {
                    return html`<span class="brand-name-wrapper conclave-brand">
                        <img class="conclave-logo" src="${logo}" alt="">
                        <span class="brand-name">
                            <span class="brand-name__text">${name}</span>
                            <p class="byline">${tagline}</p>
                        </span></span>`;
                }

                api.elements.define("converse-brand-logo",
                    class extends reg["converse-brand-logo"] {
                        render() {
                            return html`<span class="brand-heading">${heading()}</span>`;
                        }
                    });

                /* converse's project links and sponsors: ours instead */
                api.elements.define("converse-controlbox-navbar",
                    class extends reg["converse-controlbox-navbar"] {
                        render() {
                            return html`<nav class="conclave-links">${links.map(
                                (l) => html`<a href="${l.url}" target="_blank"
                                    rel="noopener">${l.text}</a>`)}</nav>`;
                        }
                    });

                api.elements.define("converse-footer",
                    class extends reg["converse-footer"] {
                        render() {
                            return html`<footer class="conclave-footer subdued">
                                ${name} &middot; converse.js ${version}</footer>`;
                        }
                    });

                api.elements.define("converse-bg",
                    class extends reg["converse-bg"] {
                        render() {
                            if (!this.hasAttribute("logo")) {
                                return "";
                            }

                            return html`<div class="inner-content converse-brand row">
                                <div class="converse-brand__heading">${heading()}</div>
                                </div>`;
                        }
                    });
            }
        });
    }

    /*
     * converse.js 14.0.0 waits for "blocklistInitialized" before it opens
     * a chat with someone outside the roster, but only resolves it when
     * the server supports XEP-0191 (blocking).  Without it no such chat
     * would ever open, in either direction: resolve it with an empty list.
     */
    function compatPlugin() {
        converse.plugins.add("conclave-compat", {
            initialize: function () {
                var _converse = this._converse;
                var api = _converse.api;
                var NS = converse.env.Strophe.NS;

                api.listen.on("discoInitialized", async function () {
                    var domain = _converse.session.get("domain");
                    var Blocklist = _converse.exports.Blocklist;

                    if (!Blocklist
                        || await api.disco.supports(NS.BLOCKING, domain))
                    {
                        return;
                    }

                    api.trigger("blocklistInitialized",
                                new (Object.getPrototypeOf(Blocklist))());
                });

                boshFallback(_converse);
            }
        });
    }

    /*
     * converse.js 14.0.0 means to fall back to BOSH when the WebSocket
     * cannot be established (its connection's reconnect() switches
     * transport when the last status was CONNFAIL), but
     * api.connection.reconnect() sets the status to RECONNECTING just
     * before that check, so it never switches and retries the WebSocket
     * for ever: behind a proxy that does not pass WebSocket upgrades the
     * page would never sign in.  So remember the last status before
     * RECONNECTING, and after a CONNFAIL on the WebSocket make BOSH the
     * page's transport before converse's reconnect() runs: this
     * connection's, and (websocket_url emptied) that of any connection
     * converse makes afresh.  A WebSocket that worked and then dropped
     * is no CONNFAIL: it is tried again.
     */
    function boshFallback(_converse) {
        var api = _converse.api;
        var Status = converse.env.Strophe.Status;
        var failed = false;
        var watching = false;

        api.listen.on("connectionInitialized", function () {
            var conn = api.connection.get();
            var reconnect = conn.reconnect;

            if (!watching) {
                watching = true;
                _converse.state.connfeedback.on("change:connection_status",
                    function (m, status) {
                        if (status !== Status.RECONNECTING) {
                            failed = (status === Status.CONNFAIL);
                        }
                    });
            }

            conn.reconnect = async function () {
                if (failed && this.isType("websocket")
                    && api.settings.get("bosh_service_url"))
                {
                    failed = false;
                    api.settings.set("websocket_url", "");
                    this._proto = new converse.env.Strophe.Bosh(this);
                    this.service = api.settings.get("bosh_service_url");
                }

                return reconnect.apply(this, arguments);
            };
        });
    }

    function start(found) {
        var domain = cfg.domain || here.hostname;
        var logo = new URL(cfg.logoUrl || "logo.svg", here.href);
        var settings = {
            /* sign in by hand, with the directory password */
            authentication: "login",
            auto_login: false,
            default_domain: domain,
            allow_registration: false,
            auto_reconnect: true,

            /* the endpoints: WebSocket first, BOSH as converse's fallback */
            discover_connection_methods: false,
            websocket_url: found.ws || absolute(cfg.websocketPath
                                                || "/xmpp-websocket", true),
            bosh_service_url: found.bosh || absolute(cfg.boshPath
                                                     || "/http-bind", false),

            muc_domain: cfg.mucDomain || "conference." + domain,

            /* assets (chunks, emoji, sounds, fonts) from this server */
            assets_path: new URL("converse/", here.href).pathname,
            notification_icon: logo.pathname,
            view_mode: "fullscreen",

            /* nothing from the internet */
            use_system_emojis: true,
            xmpp_providers_url: "",
            autocomplete_providers_url: "",
            providers_link: "",
            muc_search_service: "",
            embed_3rd_party_media_players: false,
            fetch_url_headers: false,
            render_media: [here.hostname],
            show_client_info: false,

            /*
             * OMEMO needs PEP (XEP-0163), which the server does not offer
             * yet: enabled, converse waits for it before opening a chat.
             */
            blacklisted_plugins: ["converse-omemo"],
            whitelisted_plugins: ["conclave-branding", "conclave-compat"]
        };

        Object.keys(cfg.converse || {}).forEach(function (k) {
            settings[k] = cfg.converse[k];
        });

        ["conclave-branding", "conclave-compat"].forEach(function (p) {
            if (settings.whitelisted_plugins.indexOf(p) < 0) {
                settings.whitelisted_plugins.push(p);
            }
        });

        window.conclaveSettings = settings;     /* for the browser test */
        return converse.initialize(settings);
    }

    document.title = cfg.productName || "Conclave";
    brandingCss();
    brandingPlugin();
    compatPlugin();

    (cfg.discover === false ? Promise.resolve({}) : discover()).then(start);
}());
