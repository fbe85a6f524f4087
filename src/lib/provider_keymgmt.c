/* provider_keymgmt.c: being written (work in progress). */
#include "config.h"
