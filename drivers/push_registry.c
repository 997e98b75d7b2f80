#include "push_registry.h"

void push_registry_add(struct push_registry *r, struct push_dev *d)
{
    pthread_mutex_lock(&r->lock);
    d->next = r->head;
    r->head = d;
    pthread_mutex_unlock(&r->lock);
}

void push_registry_remove(struct push_registry *r, struct push_dev *d)
{
    pthread_mutex_lock(&r->lock);
    for (struct push_dev **pp = &r->head; *pp; pp = &(*pp)->next) {
        if (*pp == d) {
            *pp = d->next;
            break;
        }
    }
    pthread_mutex_unlock(&r->lock);
}
