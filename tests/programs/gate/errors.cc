// Heap errors for the CI gate's end-to-end tests, one per argv[1]; each survives the error (the tracer does not
// pass a rejected free on) and exits 0. Tests find lines through the marker comments.
//   double      a block freed twice
//   invalid     free() of a pointer into the middle of a block
//   mismatched  delete on memory from malloc()
#include <cstdlib>
#include <cstring>

static void *volatile launder_slot;
static void *launder(void *p) {
    launder_slot = p;
    return launder_slot;
}

extern "C" __attribute__((noinline)) void release_twice(char *p) {
    void *again = launder(p);
    free(p);
    free(again); /* DOUBLE_LINE */
}

extern "C" __attribute__((noinline)) void release_inside(char *p) {
    free(launder(p + 8)); /* INVALID_LINE */
}

extern "C" __attribute__((noinline)) void delete_malloced(char *p) {
    delete static_cast<char *>(launder(p)); /* MISMATCH_LINE */
}

int main(int argc, char **argv) {
    const char *what = argc > 1 ? argv[1] : "";
    char *p = static_cast<char *>(malloc(40)); /* ERR_ALLOC_LINE */
    if (std::strcmp(what, "double") == 0) {
        release_twice(p);
    } else if (std::strcmp(what, "invalid") == 0) {
        release_inside(p);
        free(p);
    } else if (std::strcmp(what, "mismatched") == 0) {
        delete_malloced(p);
    } else {
        return 64;
    }
    return 0;
}
