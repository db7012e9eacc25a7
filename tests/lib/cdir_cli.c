
/*
 * cdir_cli: drives the ldap/ library from tests.
 *
 *   cdir_cli [--threads N] [--repeat R] [--pool P] \
 *       URI BINDDN BINDPW BASE FILTER GROUP TIMEOUT_MS LOGIN PASSWORD
 *   cdir_cli --stdin [--pool P] \
 *       URI BINDDN BINDPW BASE FILTER GROUP TIMEOUT_MS
 *
 * Prints one line per attempt: "OK <dn>", "DENIED <reason>" or
 * "UNAVAILABLE <reason>".  With --stdin it reads "LOGIN<TAB>PASSWORD"
 * lines (or "!DN" lines: cdir_revalidate) and keeps one cdir_t (and so
 * its connection pools and cache) across them, which lets a test restart
 * or pause slapd between attempts.  Exits 0 only if every attempt was
 * OK.  GROUP "" means no group restriction.
 *
 * --long adds " name=<login name> roles=<user,admin,...> groups=<n>"
 * and " truncated" / " cached" to OK lines; --set KEY=VALUE sets the
 * other cdir_config_t fields: starttls=1, ca=FILE, insecure=1,
 * name=ATTR, mode=member|memberof, depth=N, max=N, group_base=DN,
 * admin=DN, compliance=DN, auditor=DN, outage=refuse|cache, ttl=S, page=N
 * (RFC 2696 page size; -1: no paging).
 * --stats prints the counters at the end.
 *
 * Benchmark mode (tests/bench/ldap_bench.py): --quiet prints one
 * "BENCH attempts= failed= secs= rate= p50_ms= p99_ms= max_ms=" line;
 * --users N makes LOGIN a prefix (LOGIN1..LOGINN, password
 * "<login>-pw"); --rate R paces the threads to R attempts/s in total;
 * --members DN lists the group's members (cdir_group_members) instead;
 * --then R2 waits for a line on stdin after the pass and runs a second
 * one of R2 attempts per thread with the same cdir_t (and cache).
 */


#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cdir.h"


typedef struct {
    cdir_t      *dir;
    const char  *login;
    const char  *password;
    int          repeat;
    int          failed;
    int          index;         /* thread number */
    double      *lat;           /* --bench: seconds per attempt */
} cli_job_t;


static pthread_mutex_t  cli_out_lock = PTHREAD_MUTEX_INITIALIZER;
static int              cli_long;
static int              cli_users;      /* --users N: LOGIN is a prefix */
static double           cli_rate;       /* --rate R: sign-ins/s, total */
static int              cli_quiet;
static int              cli_threads_n;
static int              cli_then;       /* --then R2: a second pass */
static const char      *cli_members;    /* --members DN */


static void
cli_member(void *ctx, const char *name, const char *display)
{
    (*(int *) ctx)++;
    printf("MEMBER %s\t%s\n", name, display);
}


static double
cli_now(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);

    return ts.tv_sec + ts.tv_nsec / 1e9;
}


static int
cli_cmp_double(const void *a, const void *b)
{
    double  x = *(const double *) a, y = *(const double *) b;

    return (x > y) - (x < y);
}


static int
cli_set(cdir_config_t *cfg, char *kv)
{
    char  *v;

    v = strchr(kv, '=');
    if (v == NULL) {
        return -1;
    }

    *v++ = '\0';

    if (strcmp(kv, "starttls") == 0) {
        cfg->starttls = atoi(v);
    } else if (strcmp(kv, "ca") == 0) {
        cfg->ca_file = v;
    } else if (strcmp(kv, "insecure") == 0) {
        cfg->tls_insecure = atoi(v);
    } else if (strcmp(kv, "name") == 0) {
        cfg->name_attr = v;
    } else if (strcmp(kv, "mode") == 0) {
        cfg->group_mode = strcmp(v, "memberof") == 0 ? CDIR_GROUPS_MEMBEROF
                          : strcmp(v, "member") == 0 ? CDIR_GROUPS_MEMBER
                          : 99;
    } else if (strcmp(kv, "depth") == 0) {
        cfg->group_depth = atoi(v);
    } else if (strcmp(kv, "max") == 0) {
        cfg->max_groups = atoi(v);
    } else if (strcmp(kv, "group_base") == 0) {
        cfg->group_base = v;
    } else if (strcmp(kv, "admin") == 0) {
        cfg->role_dn[1] = v;
    } else if (strcmp(kv, "compliance") == 0) {
        cfg->role_dn[2] = v;
    } else if (strcmp(kv, "auditor") == 0) {
        cfg->role_dn[3] = v;
    } else if (strcmp(kv, "outage") == 0) {
        cfg->outage = strcmp(v, "cache") == 0 ? CDIR_OUTAGE_CACHE
                                               : CDIR_OUTAGE_REFUSE;
    } else if (strcmp(kv, "ttl") == 0) {
        cfg->cache_ttl = atoi(v);
    } else if (strcmp(kv, "page") == 0) {
        cfg->page_size = atoi(v);
    } else {
        return -1;
    }

    return 0;
}


static void
cli_print_stats(cdir_t *dir)
{
    cdir_stats_t  st;

    cdir_stats(dir, &st);

    printf("STATS ok=%lu denied=%lu unavailable=%lu revalidations=%lu "
           "cache_hits=%lu cache_misses=%lu cache_entries=%lu connects=%lu "
           "connect_errors=%lu tls_errors=%lu ops=%lu op_errors=%lu "
           "op_timeouts=%lu busy=%lu,%lu idle=%lu,%lu\n",
           st.auth_ok, st.auth_denied, st.auth_unavailable,
           st.revalidations, st.cache_hits, st.cache_misses,
           st.cache_entries, st.connects, st.connect_errors, st.tls_errors,
           st.ops, st.op_errors, st.op_timeouts, st.busy[0], st.busy[1],
           st.idle[0], st.idle[1]);
}


static int
cli_report(const cdir_auth_result_t *res)
{
    static const char  *names[] = { "OK", "DENIED", "UNAVAILABLE" };

    (void) pthread_mutex_lock(&cli_out_lock);

    printf("%s %s", names[res->status],
           res->status == CDIR_OK ? res->dn : res->reason);

    if (cli_long && res->status == CDIR_OK) {
        printf(" name=%s roles=%s%s%s%s groups=%u%s%s", res->name,
               (res->roles & CDIR_ROLE_USER) ? "user," : "",
               (res->roles & CDIR_ROLE_ADMIN) ? "admin," : "",
               (res->roles & CDIR_ROLE_COMPLIANCE) ? "compliance," : "",
               (res->roles & CDIR_ROLE_AUDITOR) ? "auditor," : "",
               res->ngroups, res->groups_truncated ? " truncated" : "",
               res->from_cache ? " cached" : "");
    }

    printf("\n");
    fflush(stdout);

    (void) pthread_mutex_unlock(&cli_out_lock);

    return res->status == CDIR_OK ? 0 : -1;
}


static void *
cli_worker(void *data)
{
    int                  i, k;
    char                 login[300], pw[320];
    double               t0, t1, start, step;
    cli_job_t           *job;
    cdir_auth_result_t   res;

    job = data;
    start = cli_now();
    step = cli_rate > 0 ? cli_threads_n / cli_rate : 0;

    for (i = 0; i < job->repeat; i++) {
        if (step > 0) {
            /* open loop: attempt i is due at start + i * step */
            while (cli_now() < start + i * step) {
                struct timespec  ts = { 0, 100000 };
                nanosleep(&ts, NULL);
            }
        }

        if (cli_users) {
            k = (job->index * job->repeat + i) % cli_users + 1;
            snprintf(login, sizeof(login), "%s%d", job->login, k);
            snprintf(pw, sizeof(pw), "%s-pw", login);

        } else {
            snprintf(login, sizeof(login), "%s", job->login);
            snprintf(pw, sizeof(pw), "%s", job->password);
        }

        t0 = cli_now();
        cdir_authenticate(job->dir, login, strlen(login), pw, strlen(pw),
                          &res);
        t1 = cli_now();

        if (job->lat) {
            job->lat[i] = t1 - t0;
        }

        if (cli_quiet) {
            job->failed += (res.status != CDIR_OK);

        } else if (cli_report(&res) != 0) {
            job->failed++;
        }
    }

    return NULL;
}


/* --quiet: one line of figures instead of one line per attempt */
static void
cli_bench_report(cli_job_t *jobs, int threads, int repeat, int failed,
    double secs)
{
    int      i, n;
    double  *all;

    n = threads * repeat;
    all = calloc(n, sizeof(double));
    if (all == NULL) {
        return;
    }

    for (i = 0; i < threads; i++) {
        if (jobs[i].lat) {
            memcpy(all + i * repeat, jobs[i].lat, repeat * sizeof(double));
            free(jobs[i].lat);
        }
    }

    qsort(all, n, sizeof(double), cli_cmp_double);

    printf("BENCH attempts=%d failed=%d secs=%.3f rate=%.1f p50_ms=%.3f "
           "p99_ms=%.3f max_ms=%.3f\n", n, failed, secs, n / secs,
           all[n / 2] * 1e3, all[(int) (n * 0.99)] * 1e3, all[n - 1] * 1e3);

    free(all);
}


static int
cli_threads(cdir_t *dir, int threads, int repeat, const char *login,
    const char *password)
{
    int         i, failed;
    double      t0;
    cli_job_t  *jobs;
    pthread_t  *tids;

    jobs = calloc(threads, sizeof(cli_job_t));
    tids = calloc(threads, sizeof(pthread_t));

    if (jobs == NULL || tids == NULL) {
        fprintf(stderr, "out of memory\n");
        failed = 1;
        goto done;
    }

    cli_threads_n = threads;
    t0 = cli_now();

    for (i = 0; i < threads; i++) {
        jobs[i].dir = dir;
        jobs[i].login = login;
        jobs[i].password = password;
        jobs[i].repeat = repeat;
        jobs[i].index = i;
        jobs[i].lat = cli_quiet ? calloc(repeat, sizeof(double)) : NULL;

        if (pthread_create(&tids[i], NULL, cli_worker, &jobs[i]) != 0) {
            fprintf(stderr, "pthread_create failed\n");
            threads = i;
            jobs[0].failed++;
            break;
        }
    }

    failed = 0;

    for (i = 0; i < threads; i++) {
        (void) pthread_join(tids[i], NULL);
        failed += jobs[i].failed;
    }

    if (cli_quiet) {
        cli_bench_report(jobs, threads, repeat, failed, cli_now() - t0);
    }

done:

    free(jobs);
    free(tids);

    return failed ? 1 : 0;
}


static int
cli_stdin(cdir_t *dir)
{
    int                  failed;
    char                *tab, *nl;
    char                 line[4096];
    cdir_auth_result_t   res;

    failed = 0;

    while (fgets(line, sizeof(line), stdin) != NULL) {
        nl = strchr(line, '\n');
        if (nl != NULL) {
            *nl = '\0';
        }

        if (line[0] == '!') {
            cdir_revalidate(dir, line + 1, &res);

            if (cli_report(&res) != 0) {
                failed = 1;
            }

            continue;
        }

        tab = strchr(line, '\t');
        if (tab == NULL) {
            fprintf(stderr, "expected LOGIN<TAB>PASSWORD\n");
            return 1;
        }

        *tab++ = '\0';

        cdir_authenticate(dir, line, strlen(line), tab, strlen(tab), &res);

        if (cli_report(&res) != 0) {
            failed = 1;
        }
    }

    return failed;
}


int
main(int argc, char **argv)
{
    int             i, rc, threads, repeat, from_stdin, need, stats;
    char            err[256];
    cdir_t         *dir;
    cdir_config_t   cfg;

    threads = 1;
    repeat = 1;
    from_stdin = 0;
    stats = 0;

    memset(&cfg, 0, sizeof(cdir_config_t));
    cfg.pool_size = 4;

    for (i = 1; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
        if (strcmp(argv[i], "--stdin") == 0) {
            from_stdin = 1;

        } else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
            threads = atoi(argv[++i]);

        } else if (strcmp(argv[i], "--repeat") == 0 && i + 1 < argc) {
            repeat = atoi(argv[++i]);

        } else if (strcmp(argv[i], "--users") == 0 && i + 1 < argc) {
            cli_users = atoi(argv[++i]);

        } else if (strcmp(argv[i], "--rate") == 0 && i + 1 < argc) {
            cli_rate = atof(argv[++i]);

        } else if (strcmp(argv[i], "--then") == 0 && i + 1 < argc) {
            cli_then = atoi(argv[++i]);

        } else if (strcmp(argv[i], "--members") == 0 && i + 1 < argc) {
            cli_members = argv[++i];
            from_stdin = 1;

        } else if (strcmp(argv[i], "--quiet") == 0) {
            cli_quiet = 1;

        } else if (strcmp(argv[i], "--long") == 0) {
            cli_long = 1;

        } else if (strcmp(argv[i], "--stats") == 0) {
            stats = 1;

        } else if (strcmp(argv[i], "--set") == 0 && i + 1 < argc) {
            if (cli_set(&cfg, argv[++i]) != 0) {
                goto usage;
            }

        } else if (strcmp(argv[i], "--pool") == 0 && i + 1 < argc) {
            cfg.pool_size = atoi(argv[++i]);

        } else {
            goto usage;
        }
    }

    need = from_stdin ? 7 : 9;

    if (argc - i != need || threads < 1 || repeat < 1) {
        goto usage;
    }

    cfg.uri = argv[i];
    cfg.bind_dn = argv[i + 1];
    cfg.bind_pw = argv[i + 2];
    cfg.base = argv[i + 3];
    cfg.user_filter = argv[i + 4];
    cfg.group_dn = argv[i + 5];
    cfg.timeout_ms = atoi(argv[i + 6]);

    dir = cdir_create(&cfg, err, sizeof(err));
    if (dir == NULL) {
        fprintf(stderr, "cdir_create: %s\n", err);
        return 3;
    }

    if (cli_members) {
        int  n = 0;

        rc = cdir_group_members(dir, cli_members, 100000, cli_member, &n,
                                err, sizeof(err));
        if (rc == 0) {
            printf("MEMBERS %d\n", n);

        } else {
            printf("ERROR %s\n", err);
        }
        rc = rc ? 1 : 0;

    } else if (from_stdin) {
        rc = cli_stdin(dir);

    } else {
        rc = cli_threads(dir, threads, repeat, argv[i + 7], argv[i + 8]);

        if (cli_then > 0) {
            char  line[64];

            /* the caller changes the directory, then says go */
            fflush(stdout);

            if (fgets(line, sizeof(line), stdin) != NULL) {
                rc = cli_threads(dir, threads, cli_then, argv[i + 7],
                                 argv[i + 8]);
            }
        }
    }

    if (stats) {
        cli_print_stats(dir);
    }

    cdir_destroy(dir);

    return rc;

usage:

    fprintf(stderr,
            "usage: cdir_cli [--threads N] [--repeat R] [--pool P] URI BINDDN"
            " BINDPW BASE FILTER GROUP TIMEOUT_MS LOGIN PASSWORD\n"
            "       cdir_cli --stdin [--pool P] URI BINDDN BINDPW BASE"
            " FILTER GROUP TIMEOUT_MS\n");
    return 3;
}
