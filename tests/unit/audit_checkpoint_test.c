
/*
 * Unit tests for audit/src/caud_checkpoint.c: Ed25519 keys, C2SP signed
 * notes and checkpoints (byte-exact against the golang.org/x/mod
 * sumdb/note example), rejection of other keys and of every changed
 * bit, journal checks against a checkpoint, and the RFC 6962 tree head
 * against the Certificate Transparency reference vectors.
 */


#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include "caud.h"
#include "unit.h"
#include "unit_files.h"


#define ORIGIN  "conclave.example.com/audit/0"


static void
unhex(uint8_t *out, const char *hex)
{
    size_t  i;
    char    b[3] = { 0 };

    for (i = 0; hex[2 * i]; i++) {
        b[0] = hex[2 * i];
        b[1] = hex[2 * i + 1];
        out[i] = (uint8_t) strtoul(b, NULL, 16);
    }
}


/* ------------------------------------------------------------------ */
/* keys and signed notes */

static const char  go_vkey[] =
    "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
static const char  go_seed[] =              /* from its PRIVATE+KEY form */
    "AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
static const char  go_text[] =
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n";
static const char  go_note[] =
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
    "\n"
    "\xe2\x80\x94 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIu"
    "GUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";


static void
test_keys(const char *base)
{
    int               fd;
    char              path[512], err[512], vkey[CAUD_VKEY_MAX];
    caud_signer_t    *s;
    caud_verifier_t  *v;
    struct stat       st;

    snprintf(path, sizeof(path), "%s/audit.key", base);

    check(caud_key_generate(path, err, sizeof(err)) == 0, "keys",
          "generate", err);
    check(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600, "keys",
          "key file is 0600", NULL);
    check(caud_key_generate(path, err, sizeof(err)) != 0, "keys",
          "an existing key is never replaced", NULL);

    check(caud_signer_load(path, "a b", err, sizeof(err)) == NULL
          && caud_signer_load(path, "a+b", err, sizeof(err)) == NULL
          && caud_signer_load(path, "", err, sizeof(err)) == NULL, "keys",
          "bad key names refused", NULL);

    snprintf(path, sizeof(path), "%s/not-a-key", base);
    fd = open(path, O_WRONLY | O_CREAT, 0600);
    check(fd >= 0 && write(fd, "hello\n", 6) == 6, "keys", "write junk",
          NULL);
    close(fd);
    check(caud_signer_load(path, "x", err, sizeof(err)) == NULL, "keys",
          "a file that is not a key refused", err);

    snprintf(path, sizeof(path), "%s/audit.key", base);
    s = caud_signer_load(path, "conclave-1", err, sizeof(err));
    check(s != NULL && caud_signer_vkey(s, vkey, sizeof(vkey)) == 0
          && strncmp(vkey, "conclave-1+", 11) == 0 && strlen(vkey) == 64,
          "keys", "vkey is name+hash+key", vkey);

    v = caud_verifier_new(vkey, err, sizeof(err));
    check(v != NULL, "keys", "verifier from vkey", err);
    caud_verifier_free(v);

    /* the key hash binds the name: change either and it is refused */
    vkey[0] = 'd';
    check(caud_verifier_new(vkey, err, sizeof(err)) == NULL, "keys",
          "vkey with another name refused", NULL);
    vkey[0] = 'c';
    vkey[12] = vkey[12] == '0' ? '1' : '0';
    check(caud_verifier_new(vkey, err, sizeof(err)) == NULL, "keys",
          "vkey with another hash refused", NULL);

    check(caud_verifier_new("x+00000000+AAAA", err, sizeof(err)) == NULL
          && caud_verifier_new("nohash", err, sizeof(err)) == NULL, "keys",
          "malformed vkeys refused", NULL);

    caud_signer_free(s);
}


/* writes the Go example's private key as PKCS#8 PEM */
static int
go_key_pem(const char *path)
{
    int        rc;
    FILE      *fp;
    uint8_t    raw[40];
    EVP_PKEY  *k;

    if (EVP_DecodeBlock(raw, (const uint8_t *) go_seed, strlen(go_seed))
        != 33 || raw[0] != 0x01)
    {
        return -1;
    }

    k = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, raw + 1, 32);
    fp = fopen(path, "w");
    rc = k != NULL && fp != NULL
         && PEM_write_PrivateKey(fp, k, NULL, NULL, 0, NULL, NULL) == 1;

    if (fp) {
        fclose(fp);
    }

    EVP_PKEY_free(k);

    return rc ? 0 : -1;
}


static void
test_go_note(const char *base)
{
    char              path[512], err[512], vkey[CAUD_VKEY_MAX], note[1024];
    size_t            len, tlen;
    caud_signer_t    *s;
    caud_verifier_t  *v;

    snprintf(path, sizeof(path), "%s/go.key", base);

    s = go_key_pem(path) == 0
        ? caud_signer_load(path, "PeterNeumann", err, sizeof(err)) : NULL;
    check(s != NULL, "go note", "load the example key", err);
    if (s == NULL) {
        return;
    }

    check(caud_signer_vkey(s, vkey, sizeof(vkey)) == 0
          && strcmp(vkey, go_vkey) == 0, "go note",
          "vkey equals the Go example's (key ID, encoding)", vkey);

    check(caud_note_sign(s, go_text, strlen(go_text), note, sizeof(note),
                         &len) == 0
          && len == strlen(go_note) && strcmp(note, go_note) == 0,
          "go note", "signed note is byte-identical to Go's", note);

    v = caud_verifier_new(go_vkey, err, sizeof(err));
    check(v != NULL && caud_note_verify(v, go_note, strlen(go_note), &tlen,
                                        err, sizeof(err)) == 0
          && tlen == strlen(go_text), "go note", "Go's note verifies", err);

    strcpy(note, go_note);
    note[3] ^= 0x20;
    check(caud_note_verify(v, note, strlen(note), &tlen, err, sizeof(err))
          != 0, "go note", "a changed text is refused", NULL);

    caud_verifier_free(v);
    caud_signer_free(s);
}


static void
test_checkpoint(const char *base)
{
    int                 bad, i;
    char                path[512], err[512], vkey[CAUD_VKEY_MAX];
    char                note[CAUD_NOTE_MAX], other[CAUD_NOTE_MAX];
    char                text[512];
    size_t              len, olen, bit, tlen;
    caud_signer_t      *s, *s2, *s3;
    caud_verifier_t    *v, *v3;
    caud_checkpoint_t   cp, got;

    snprintf(path, sizeof(path), "%s/audit.key", base);
    s = caud_signer_load(path, "conclave-1", err, sizeof(err));
    caud_signer_vkey(s, vkey, sizeof(vkey));
    v = caud_verifier_new(vkey, err, sizeof(err));

    memset(&cp, 0, sizeof(cp));
    strcpy(cp.origin, ORIGIN);
    cp.size = 12345;
    for (i = 0; i < CAUD_HASH_LEN; i++) {
        cp.root[i] = (uint8_t) (i * 37 + 1);
    }

    check(caud_checkpoint_sign(s, &cp, note, sizeof(note), &len) == 0
          && len == strlen(note), "checkpoint", "sign", NULL);

    check(strncmp(note, ORIGIN "\n12345\n", strlen(ORIGIN) + 7) == 0
          && strstr(note, "=\n\n\xe2\x80\x94 conclave-1 ") != NULL,
          "checkpoint", "C2SP layout", note);

    memset(&got, 0, sizeof(got));
    check(caud_checkpoint_verify(v, note, len, ORIGIN, &got, err,
                                 sizeof(err)) == 0
          && strcmp(got.origin, cp.origin) == 0 && got.size == cp.size
          && memcmp(got.root, cp.root, CAUD_HASH_LEN) == 0, "checkpoint",
          "verify returns what was signed", err);

    check(caud_checkpoint_verify(v, note, len, "elsewhere/audit/0", &got,
                                 err, sizeof(err)) != 0, "checkpoint",
          "another origin refused", NULL);

    /* the same key name with another key: the CVE-2023-31439 shape,
     * a history re-sealed with a key the verifier does not trust */
    snprintf(path, sizeof(path), "%s/attacker.key", base);
    caud_key_generate(path, err, sizeof(err));
    s2 = caud_signer_load(path, "conclave-1", err, sizeof(err));
    check(s2 != NULL && caud_checkpoint_sign(s2, &cp, other, sizeof(other),
                                             &olen) == 0
          && caud_checkpoint_verify(v, other, olen, NULL, &got, err,
                                    sizeof(err)) != 0
          && strstr(err, "not signed"), "checkpoint",
          "signed by another key with the same name: refused", err);

    /* a changed tree size, re-typed by hand */
    strcpy(other, note);
    memcpy(strstr(other, "12345"), "12346", 5);
    check(caud_checkpoint_verify(v, other, len, NULL, &got, err,
                                 sizeof(err)) != 0, "checkpoint",
          "changed tree size refused", NULL);

    strcpy(other, note);
    memcpy(strstr(other, "12345"), "99999", 5);
    check(caud_checkpoint_verify(v, other, len, NULL, &got, err,
                                 sizeof(err)) != 0, "checkpoint",
          "bigger tree size refused", NULL);

    /* every bit of the note, text and signature alike */
    bad = 0;
    for (bit = 0; bit < len * 8; bit++) {
        memcpy(other, note, len + 1);
        other[bit / 8] ^= (char) (1u << (bit % 8));

        if (caud_checkpoint_verify(v, other, len, NULL, &got, err,
                                   sizeof(err)) == 0)
        {
            bad++;
            snprintf(text, sizeof(text), "bit %zu accepted", bit);
        }
    }

    check(bad == 0, "checkpoint", "every single-bit change refused",
          bad ? text : NULL);

    check(caud_checkpoint_verify(v, note, len - 1, NULL, &got, err,
                                 sizeof(err)) != 0
          && caud_checkpoint_verify(v, note, strstr(note, "\n\n") - note + 2,
                                    NULL, &got, err, sizeof(err)) != 0
          && caud_checkpoint_verify(v, "", 0, NULL, &got, err, sizeof(err))
             != 0, "checkpoint", "truncated notes refused", NULL);

    /* a witness cosignature by a key we do not know is ignored */
    snprintf(path, sizeof(path), "%s/witness.key", base);
    caud_key_generate(path, err, sizeof(err));
    s3 = caud_signer_load(path, "witness.example", err, sizeof(err));
    caud_signer_vkey(s3, vkey, sizeof(vkey));
    v3 = caud_verifier_new(vkey, err, sizeof(err));

    tlen = strstr(note, "\n\n") - note + 1;
    caud_note_sign(s3, note, tlen, other, sizeof(other), &olen);
    memcpy(other + olen, note + tlen + 1, len - tlen - 1);
    olen += len - tlen - 1;
    other[olen] = '\0';

    check(caud_checkpoint_verify(v, other, olen, ORIGIN, &got, err,
                                 sizeof(err)) == 0
          && caud_checkpoint_verify(v3, other, olen, ORIGIN, &got, err,
                                    sizeof(err)) == 0, "checkpoint",
          "cosigned note verifies with either key", err);

    /* bodies that are signed but not checkpoints */
    snprintf(text, sizeof(text), ORIGIN "\n012345\n%s",
             strchr(strchr(note, '\n') + 1, '\n') + 1);
    *strstr(text, "\n\n") = '\0';
    strcat(text, "\n");
    caud_note_sign(s, text, strlen(text), other, sizeof(other), &olen);
    check(caud_checkpoint_verify(v, other, olen, NULL, &got, err,
                                 sizeof(err)) != 0, "checkpoint",
          "leading zero in the tree size refused", err);

    snprintf(text, sizeof(text), ORIGIN "\n5\nAAAA\n");
    caud_note_sign(s, text, strlen(text), other, sizeof(other), &olen);
    check(caud_checkpoint_verify(v, other, olen, NULL, &got, err,
                                 sizeof(err)) != 0, "checkpoint",
          "short root refused", err);

    snprintf(text, sizeof(text), ORIGIN "\n18446744073709551616\n"
             "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n");
    caud_note_sign(s, text, strlen(text), other, sizeof(other), &olen);
    check(caud_checkpoint_verify(v, other, olen, NULL, &got, err,
                                 sizeof(err)) != 0, "checkpoint",
          "tree size overflow refused", err);

    snprintf(text, sizeof(text), ORIGIN "\n7\n"
             "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"
             "Timestamp: 1700000000\n");
    caud_note_sign(s, text, strlen(text), other, sizeof(other), &olen);
    check(caud_checkpoint_verify(v, other, olen, NULL, &got, err,
                                 sizeof(err)) == 0 && got.size == 7,
          "checkpoint", "extension lines allowed", err);

    caud_verifier_free(v);
    caud_verifier_free(v3);
    caud_signer_free(s);
    caud_signer_free(s2);
    caud_signer_free(s3);
}


/* ------------------------------------------------------------------ */
/* journals against checkpoints */

static int
write_journal(const char *dir, int n, int changed)
{
    int              i, rc;
    char             err[512], body[64];
    json_t          *rec;
    caud_journal_t  *j;
    caud_journal_opts_t  o = { 4096, 1, 0 };

    if (caud_journal_open(dir, 0, &o, &j, err, sizeof(err)) != 0) {
        return -1;
    }

    rc = 0;

    for (i = 1; i <= n && rc == 0; i++) {
        snprintf(body, sizeof(body), "message %d%s", i,
                 i == changed ? " (rewritten)" : "");

        rec = caud_record_new("message", CAUD_SUCCESS, 1700000000000000 + i);
        rc = caud_record_set_param(rec, "body", json_string(body))
             | caud_journal_append(j, rec, NULL);
        json_decref(rec);
    }

    caud_journal_close(j, NULL, 0);

    return rc;
}


static int
entry_hash_of(const char *dir, uint64_t seq, uint8_t *out)
{
    int             rc;
    char            err[256];
    caud_frame_t    f;
    caud_reader_t  *r;

    if (caud_reader_open(dir, 0, seq, &r, err, sizeof(err)) != 0) {
        return -1;
    }

    rc = caud_reader_next(r, &f) == 1 && f.seq == seq ? 0 : -1;
    if (rc == 0) {
        memcpy(out, f.entry_hash, CAUD_HASH_LEN);
    }

    caud_reader_close(r);

    return rc;
}


static void
test_check_journal(const char *base)
{
    char                dir[512], dir2[512], err[512], path[1024];
    char                vkey[CAUD_VKEY_MAX], note[CAUD_NOTE_MAX];
    size_t              len;
    caud_signer_t      *s, *s2;
    caud_verifier_t    *v;
    caud_checkpoint_t   cp30, cp50, cp51, forged, got;
    caud_frame_t        f;
    caud_reader_t      *r;
    uint64_t            off41;

    snprintf(dir, sizeof(dir), "%s/j", base);
    snprintf(dir2, sizeof(dir2), "%s/j2", base);
    mkdir(dir, 0700);
    mkdir(dir2, 0700);

    check(write_journal(dir, 50, 0) == 0, "check journal", "journal",
          NULL);

    memset(&cp30, 0, sizeof(cp30));
    strcpy(cp30.origin, ORIGIN);
    cp50 = cp30;
    cp51 = cp30;
    cp30.size = 30;
    cp50.size = 50;
    cp51.size = 51;
    entry_hash_of(dir, 30, cp30.root);
    entry_hash_of(dir, 50, cp50.root);
    memcpy(cp51.root, cp50.root, CAUD_HASH_LEN);

    check(caud_checkpoint_check_journal(dir, 0, &cp30, err, sizeof(err))
          == 0 && caud_checkpoint_check_journal(dir, 0, &cp50, err,
                                                sizeof(err)) == 0,
          "check journal", "journal matches its checkpoints", err);

    check(caud_checkpoint_check_journal(dir, 0, &cp51, err, sizeof(err))
          != 0 && strstr(err, "tail truncated"), "check journal",
          "a checkpoint past the end", err);

    /* a history rewritten from seq 10 on, with a valid chain */
    check(write_journal(dir2, 50, 10) == 0, "check journal",
          "rewritten journal", NULL);
    check(caud_checkpoint_check_journal(dir2, 0, &cp30, err, sizeof(err))
          != 0 && strstr(err, "rewritten"), "check journal",
          "a rewritten history fails the old checkpoint", err);

    /* ... and its forger signs a checkpoint with a key of his own */
    snprintf(path, sizeof(path), "%s/audit.key", base);
    s = caud_signer_load(path, "conclave-1", err, sizeof(err));
    caud_signer_vkey(s, vkey, sizeof(vkey));
    v = caud_verifier_new(vkey, err, sizeof(err));

    snprintf(path, sizeof(path), "%s/attacker.key", base);
    s2 = caud_signer_load(path, "conclave-1", err, sizeof(err));

    forged = cp30;
    entry_hash_of(dir2, 30, forged.root);
    caud_checkpoint_sign(s2, &forged, note, sizeof(note), &len);
    check(caud_checkpoint_check_journal(dir2, 0, &forged, err, sizeof(err))
          == 0 && caud_checkpoint_verify(v, note, len, ORIGIN, &got, err,
                                         sizeof(err)) != 0, "check journal",
          "a forged checkpoint matches the forgery but fails the key", err);

    /* the tail cut at a frame boundary: the reader alone cannot know */
    off41 = 0;
    if (caud_reader_open(dir, 0, 41, &r, err, sizeof(err)) == 0) {
        if (caud_reader_next(r, &f) == 1) {
            off41 = f.offset;
            snprintf(path, sizeof(path), "%s/%s", dir, f.file);
        }
        caud_reader_close(r);
    }

    check(off41 > 0 && truncate(path, off41) == 0, "check journal",
          "cut the tail", path);
    check(caud_checkpoint_check_journal(dir, 0, &cp50, err, sizeof(err))
          != 0 && strstr(err, "ends at seq 40"), "check journal",
          "a cut tail fails the last checkpoint", err);
    check(caud_checkpoint_check_journal(dir, 0, &cp30, err, sizeof(err))
          == 0, "check journal", "and still passes an earlier one", err);

    caud_verifier_free(v);
    caud_signer_free(s);
    caud_signer_free(s2);
}


/* ------------------------------------------------------------------ */
/* RFC 6962 */

/* MTH() by the definition in RFC 6962 2.1, recursively */
static void
mth(caud_hasher_t *h, uint8_t (*leaves)[CAUD_HASH_LEN], size_t n,
    uint8_t *out)
{
    size_t   k;
    uint8_t  l[CAUD_HASH_LEN], r[CAUD_HASH_LEN];

    if (n == 1) {
        memcpy(out, leaves[0], CAUD_HASH_LEN);
        return;
    }

    for (k = 1; k * 2 < n; k *= 2) {
        /* the largest power of two smaller than n */
    }

    mth(h, leaves, k, l);
    mth(h, leaves + k, n - k, r);
    caud_hasher_prefixed(h, 0x01, l, CAUD_HASH_LEN, r, CAUD_HASH_LEN, out);
}


static void
test_merkle(void)
{
    int             ok;
    size_t          i, n;
    uint8_t         root[CAUD_HASH_LEN], want[CAUD_HASH_LEN], d[2];
    uint8_t         data[16], leaves[70][CAUD_HASH_LEN];
    caud_merkle_t   m;
    caud_hasher_t  *h;

    /* github.com/google/certificate-transparency merkle_tree_test.cc,
     * as transparency-dev/merkle keeps them */
    static const char  *ct_leaves[] = {
        "", "00", "10", "2021", "3031", "40414243", "5051525354555657",
        "606162636465666768696a6b6c6d6e6f"
    };
    static const char  *ct_roots[] = {
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
    };

    h = caud_hasher_new();
    caud_merkle_init(&m);

    for (i = 0; i <= 8; i++) {
        unhex(want, ct_roots[i]);
        check(caud_merkle_root(&m, h, root) == 0
              && memcmp(root, want, CAUD_HASH_LEN) == 0, "merkle",
              "RFC 6962 reference root", ct_roots[i]);

        if (i < 8) {
            unhex(data, ct_leaves[i]);
            caud_merkle_leaf(h, data, strlen(ct_leaves[i]) / 2, leaves[0]);
            caud_merkle_append(&m, h, leaves[0]);
        }
    }

    /* every shape of ragged tree up to 70 leaves, against the
     * recursive definition */
    caud_merkle_init(&m);
    ok = 1;

    for (n = 1; n <= 70; n++) {
        d[0] = (uint8_t) n;
        d[1] = (uint8_t) (n * 7);
        caud_merkle_leaf(h, d, 2, leaves[n - 1]);
        caud_merkle_append(&m, h, leaves[n - 1]);

        mth(h, leaves, n, want);
        caud_merkle_root(&m, h, root);
        ok = ok && memcmp(root, want, CAUD_HASH_LEN) == 0;
    }

    check(ok && m.size == 70, "merkle", "compact range equals MTH for 1..70",
          NULL);

    caud_hasher_free(h);
}


int
main(void)
{
    char  base[256];

    if (mkdir_tmp(base, sizeof(base), "caud-cp") == NULL) {
        printf("mkdtemp failed\n0 passed, 1 failed\n");
        return 1;
    }

    test_keys(base);
    test_go_note(base);
    test_checkpoint(base);
    test_check_journal(base);
    test_merkle();

    rmtree(base);

    return unit_report();
}
