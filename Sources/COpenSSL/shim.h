// OpenSSL's libcrypto, for SHA-256 only (EVP digests use the CPU's SHA extensions where it has them).
#include <openssl/evp.h>
