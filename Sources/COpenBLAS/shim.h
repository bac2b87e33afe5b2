#include <stddef.h>
#include <cblas.h>

// LAPACK's symmetric eigensolver (divide and conquer). OpenBLAS exports LAPACK, but Debian's
// libopenblas-dev ships no lapack.h, so the one routine the toolkit needs is declared here with the
// Fortran calling convention: every argument by pointer, the hidden lengths of the two CHARACTER
// arguments last.
void dsyevd_(const char *jobz, const char *uplo, const int *n, double *a, const int *lda, double *w,
             double *work, const int *lwork, int *iwork, const int *liwork, int *info,
             size_t jobz_len, size_t uplo_len);
