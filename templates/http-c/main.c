/*
 * The HTTP handler of {{project-name}}: a WAGI program.
 *
 * Tern runs it once per request, CGI-style: the request's metadata arrives in
 * environment variables (REQUEST_METHOD, PATH_INFO, QUERY_STRING, HTTP_*...),
 * its body on stdin, and whatever the program prints to stdout is the
 * response: header lines, an empty line, then the body.
 */
#include <stdio.h>
#include <stdlib.h>

static const char *env(const char *name) {
    const char *value = getenv(name);
    return value ? value : "";
}

int main(void) {
    printf("Content-Type: text/plain\n");
    printf("\n");
    printf("Hello from C!\n");
    printf("You asked for %s %s", env("REQUEST_METHOD"), env("PATH_INFO"));
    if (*env("QUERY_STRING")) {
        printf("?%s", env("QUERY_STRING"));
    }
    printf("\n");
    return 0;
}
