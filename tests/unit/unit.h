
/*
 * The checks every unit test counts with, so that each prints the same
 * lines: `make unit` reads the last "N passed, N failed" line a test
 * prints (unit_report()) and shows the FAIL lines above it.
 *
 *   check(ok, group, name, detail)   table-driven tests: prints
 *                                    "FAIL group: name: detail"
 *                                    (detail may be NULL)
 *   checkf(cond, fmt, ...)           prints "FAIL file:line: " and a
 *                                    printf(3) message
 *
 * Included once, by the test's own .c file: the counters are static.
 */


#ifndef _UNIT_H_INCLUDED_
#define _UNIT_H_INCLUDED_


#include <stdio.h>


static int  passed;
static int  failed;


#define checkf(cond, ...)                                                  \
    do {                                                                   \
        if (cond) {                                                        \
            passed++;                                                      \
        } else {                                                           \
            failed++;                                                      \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                    \
            printf(__VA_ARGS__);                                           \
            printf("\n");                                                  \
        }                                                                  \
    } while (0)


static inline void
check(int ok, const char *group, const char *name, const char *detail)
{
    if (ok) {
        passed++;
        return;
    }

    failed++;
    printf("FAIL %s: %s%s%s\n", group, name, detail ? ": " : "",
           detail ? detail : "");
}


/* the line make unit counts; the exit status says the same */
static inline int
unit_report(void)
{
    printf("%d passed, %d failed\n", passed, failed);

    return failed ? 1 : 0;
}


#endif /* _UNIT_H_INCLUDED_ */
