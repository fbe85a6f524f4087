/* pam_mtls_agent.c: being written (work in progress). */
#include "config.h"
