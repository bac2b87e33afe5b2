// zlib for PPTorchFormat: crc32_z for the CRC-32 of zip entries.
#include <zlib.h>
