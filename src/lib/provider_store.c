/* provider_store.c: being written (work in progress). */
#include "config.h"
