/* provider_signature.c: being written (work in progress). */
#include "config.h"
